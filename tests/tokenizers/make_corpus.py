#!/usr/bin/env python3
"""make_corpus: writes corpus.jsonl, the multilingual text that test_tokenizer_parity.c encodes
with our tokenizer and make_golden.mjs encodes with the reference (a JS port of HF tokenizers).

Usage: python3 make_corpus.py [OUT]   (default: corpus.jsonl beside this script)

One JSON string per line (so a line may hold \\n, \\r\\n, \\t); invisible and format characters
are written as \\uXXXX escapes so the file stays readable and diff-friendly. Deterministic: a
private splitmix64 generator (not `random`, whose algorithms may change between Pythons) and
hand-written text banks; the output is committed, this script only documents and rebuilds it.
Python 3.8+, standard library only.

Every character is assigned in Unicode 14 (checked below): PCRE2 10.42 knows Unicode 14, Node's
ICU a later version, and a character one of them does not know is classified differently by
\\p{L} / \\p{N} / \\p{S}, which would test the Unicode tables, not the tokenizer.
"""

import json
import os
import sys
import unicodedata

# ----------------------------------------------------------------------------------------------
# deterministic randomness


class Rng:
    """splitmix64: same numbers on every Python."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFFFFFFFFFF

    def next64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        return self.next64() % n

    def between(self, lo, hi):  # inclusive
        return lo + self.below(hi - lo + 1)

    def chance(self, p_percent):
        return self.below(100) < p_percent

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def shuffled(self, seq):
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out

    def sample(self, seq, k):
        return self.shuffled(seq)[:k]


# ----------------------------------------------------------------------------------------------
# text banks (written for this corpus)

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times; it was, for most of us, merely a Tuesday.",
    "She said, \"I don't think that's what he meant,\" and closed the laptop.",
    "We're going to need a bigger boat, and probably a better map.",
    "They'll arrive by 9:30 a.m. unless the train's delayed again.",
    "I'm not sure whether you'd call it a bug or a feature.",
    "You've got mail! (Three new messages, two of them spam.)",
    "He'd already left when the phone rang—twice—at midnight.",
    "Isn't it strange how memory works? We forget keys but remember songs.",
    "The committee's report, released on Monday, recommends a 12% increase.",
    "Please don't feed the animals; they've been fed already.",
    "What's the difference between a cache and a buffer, anyway?",
    "In 1969, humans first walked on the Moon; in 2024, we argue about tabs vs. spaces.",
    "\"Hello,\" she whispered. \"Is anyone there?\"",
    "Our team's goal: ship early, ship often, and never break the build.",
    "The museum's collection includes over 3,000 paintings from the 19th century.",
    "Ain't nothing wrong with a little rain—it's good for the garden.",
    "The results were inconclusive, so we'll run the experiment again next week.",
    "A well-known author once wrote: 'Brevity is the soul of wit.'",
    "Could you pass the salt? No, the other one—the one that's actually salt.",
    "Our CEO's keynote ran 45 minutes over, which surprised exactly nobody.",
    "The river flows north for about 200 km before it turns east toward the sea.",
    "Mr. and Mrs. O'Brien's dog, Biscuit, won first prize at the county fair.",
    "If you can't explain it simply, you don't understand it well enough.",
    "The server returned HTTP 503; the load balancer hadn't noticed the outage.",
    "Wait... did you just say the deadline's tomorrow?!",
    "Rock 'n' roll never dies; it just gets remastered.",
    "The children's books were stacked neatly on the librarian's desk.",
    "I've been there, done that, and bought the T-shirt.",
    "Weather forecast: sunny spells, scattered showers, highs near 21 °C.",
    "Her grandmother's recipe calls for 2 cups of flour and a pinch of patience.",
    "There's no place like 127.0.0.1, as the sysadmins say.",
    "You're welcome to join us—just bring your own chair.",
    "It's raining cats and dogs; don't forget your umbrella.",
    "The year's final quarter showed revenue of $4.2 billion, up 7.5% year-over-year.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "Every morning, the baker's oven warms the whole street before dawn.",
    "They say the early bird gets the worm, but the second mouse gets the cheese.",
    "Can't stop, won't stop, shouldn't have started.",
    "The ship's captain logged 14 knots at 0600 hours, bearing 270°.",
    "Jane's and John's reports disagree on one key point: who'd pay for it.",
    "We'd've finished sooner if y'all'd helped.",
    "Mind the gap between the train and the platform edge.",
    "Neither the rain nor the snow could stop the mail carrier's rounds.",
    "The algorithm runs in O(n log n) time and uses O(n) extra memory.",
]

EN_CONTRACTION_WORDS = [
    "don't", "DON'T", "Don't", "doN'T", "it's", "IT'S", "It'S", "they're", "THEY'RE", "They'Re",
    "we've", "WE'VE", "We'Ve", "I'm", "I'M", "you'll", "YOU'LL", "You'Ll", "she'd", "SHE'D",
    "won't", "can't", "CAN'T", "shouldn't've", "y'all", "o'clock", "rock'n'roll", "'s", "'t",
    "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Re", "'rE",
    "'lL", "'Ll", "ma'am", "O'Neill's", "d'Artagnan", "l'homme", "'twas", "'tis", "'90s",
    "the '80s", "Jesus'", "students'", "it''s", "it ' s", "don’t", "it’s", "they’re", "‘quoted’",
    "'quoted'", "\"double\"", "“curly”", "«guillemets»", "„Anführung“", "「括弧」", "'sound'",
    "'123", "'s'", "''", "'''", "'\t's", "' s", "'\ns", "x'sy", "'ss", "'tt", "'rest", "'veal",
    "'mama", "'llama", "'dd", "'ve'", "you'RE'", "WE'LL'VE", "'", "'é", "'ş", "'ß", "'ä",
]

ZH = [
    "今天天气很好，我们去公园散步吧。",
    "人工智能正在改变我们的生活方式和工作方式。",
    "这本书我已经读了三遍，每次都有新的收获。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "他说：“明天早上八点在学校门口见面。”",
    "我们需要在周五之前完成这个项目的第一阶段。",
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "请问去火车站怎么走？大概需要多长时间？",
    "这家餐厅的饺子特别好吃，价格也很便宜。",
    "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？",
    "数据显示，今年第一季度的销售额同比增长了百分之十五。",
    "小明的妈妈让他去超市买牛奶、鸡蛋和面包。",
    "长江是亚洲最长的河流，全长约六千三百公里。",
    "软件开发中最难的两件事：缓存失效和命名。",
    "你好！很高兴认识你。你是哪里人？",
    "繁體中文：這是一個測試句子，包含繁體字。",
    "龍門客棧的老闆娘總是笑臉迎人。",
    "天下大势，分久必合，合久必分。",
    "请把窗户关上，外面风很大。",
    "机器学习模型需要大量的训练数据和计算资源。",
    "秋天到了，树叶变黄了，一片一片地从树上落下来。",
    "我喜欢喝绿茶，不太喜欢喝咖啡。",
    "会议改在下午三点半，地点不变。",
    "上海的地铁网络是世界上最大的之一。",
    "熊猫是中国特有的珍稀动物，主要生活在四川。",
    "这个问题的答案并不像看起来那么简单。",
    "他一边听音乐一边写作业，效率很低。",
    "欢迎使用本系统！如有问题，请联系管理员。",
    "鼠标、键盘、显示器都已经准备好了。",
    "中华人民共和国成立于一九四九年十月一日。",
]

JA = [
    "今日はとても良い天気ですね。散歩に行きましょう。",
    "東京駅から新宿駅まで電車で約十五分かかります。",
    "私は毎朝コーヒーを飲みながらニュースを読みます。",
    "このプログラムはバグがあるので、修正が必要です。",
    "日本語の文章には、ひらがな、カタカナ、漢字が混ざっています。",
    "すみません、トイレはどこですか？",
    "古池や蛙飛び込む水の音",
    "明日の会議は午後二時からに変更になりました。",
    "コンピューターサイエンスを勉強している学生です。",
    "ありがとうございます！とても助かりました。",
    "桜の花が咲く季節になると、多くの人がお花見に出かけます。",
    "ラーメン、寿司、天ぷら――どれも大好きです。",
    "彼女は「また来週ね」と言って帰っていった。",
    "このアプリケーションは、スマートフォンでも使えます。",
    "富士山は日本で一番高い山で、標高は三七七六メートルです。",
    "ｶﾀｶﾅの半角文字も時々使われます。",
    "吾輩は猫である。名前はまだ無い。",
    "お問い合わせは、メールまたはお電話でお願いいたします。",
    "パスワードを忘れた場合は、こちらをクリックしてください。",
    "新幹線のぞみ号は東京と大阪を約二時間半で結びます。",
    "ヴァイオリンとヴィオラの違いを説明してください。",
    "ゃゅょっぁぃぅぇぉ、小さい文字のテスト。",
    "京都には千以上のお寺があると言われています。",
    "週末は友達と映画を見に行く予定です。",
    "エラーが発生しました。もう一度お試しください。",
    "ゝゞヽヾ々〆〇ー、記号類のテスト。",
]

KO = [
    "안녕하세요! 만나서 반갑습니다.",
    "오늘 날씨가 정말 좋네요. 산책하러 갈까요?",
    "저는 서울에 살고 있고, 회사원입니다.",
    "한국어는 한글이라는 고유한 문자를 사용합니다.",
    "이 프로그램을 실행하려면 관리자 권한이 필요합니다.",
    "어제 친구들과 함께 맛있는 김치찌개를 먹었어요.",
    "세종대왕은 1443년에 훈민정음을 창제했습니다.",
    "죄송하지만, 지하철역이 어디에 있는지 알려 주시겠어요?",
    "인공지능 기술이 빠르게 발전하고 있습니다.",
    "다음 주 월요일까지 보고서를 제출해 주세요.",
    "부산은 한국에서 두 번째로 큰 도시입니다.",
    "커피 한 잔 하실래요? 아니면 녹차가 좋으세요?",
    "이 책은 정말 재미있어서 밤새 읽었어요.",
    "비밀번호가 일치하지 않습니다. 다시 입력해 주세요.",
    "봄이 오면 벚꽃이 활짝 핍니다.",
    "가나다라마바사아자차카타파하",
    "똑똑한 뚱뚱이가 빨리 뛰었다. 쌍자음 테스트: ㄲㄸㅃㅆㅉ",
    "한국의 전통 음식으로는 불고기, 비빔밥, 떡볶이 등이 있습니다.",
    "회의는 오후 3시 30분에 시작합니다.",
    "ㅋㅋㅋㅋ 너무 웃겨요 ㅎㅎ",
]

RU = [
    "Привет! Как у тебя дела сегодня?",
    "Москва — столица России и крупнейший город страны.",
    "Я изучаю программирование уже три года.",
    "В лесу родилась ёлочка, в лесу она росла.",
    "Пожалуйста, закройте дверь: на улице холодно.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Мы встретимся завтра в 10:00 у главного входа.",
    "Эта задача оказалась сложнее, чем мы ожидали.",
    "Война и мир — роман Льва Николаевича Толстого.",
    "ЗАГЛАВНЫЕ БУКВЫ ТОЖЕ НУЖНО ПРОВЕРИТЬ!",
    "Україна: Київ, Львів, Одеса, Харків — великі міста.",
    "Добрий день! Ґанок, їжак, єнот, ірис.",
    "Български: Здравейте, как сте? Щастие и ъгъл.",
    "Српски: Ђорђе је јео ћевапчиће у Београду.",
    "Қазақша: Сәлеметсіз бе! Қалыңыз қалай?",
    "Беларуская мова: Добры дзень, як справы? Ўсё добра.",
    "Он сказал: «Я приду позже», — и ушёл.",
    "Температура воздуха −15 °C, ветер северный.",
    "Алгоритм сортировки работает за O(n·log n).",
    "Сегодня 1 января 2024 года, понедельник.",
]

AR_HE = [
    "مرحبا بكم في موقعنا الإلكتروني.",
    "اللغة العربية من أقدم اللغات في العالم.",
    "كيف حالك اليوم؟ أتمنى أن تكون بخير.",
    "يقع المسجد في وسط المدينة القديمة.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ",
    "سنلتقي غدًا الساعة ١٠:٣٠ صباحًا.",
    "عدد السكان ٤٫٥ مليون نسمة تقريبًا.",
    "فارسی: سلام، حال شما چطور است؟ می‌خواهم بروم.",
    "اردو: آپ کیسے ہیں؟ میں ٹھیک ہوں۔",
    "שלום עולם! מה שלומך היום?",
    "עברית היא שפה שמית עתיקה.",
    "ירושלים היא עיר הבירה של ישראל.",
    "בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם וְאֵת הָאָרֶץ.",
    "אני לומד תכנות כבר שלוש שנים.",
    "Mixed bidi: the word שלום means peace, and سلام too.",
    "הפגישה נקבעה ל-15 במרץ בשעה 14:00.",
    "יידיש: ווי גייט עס?",
    "تم تحديث البرنامج إلى الإصدار 3.2.1 بنجاح.",
    "الأرقام: 0123456789 و ٠١٢٣٤٥٦٧٨٩ و ۰۱۲۳۴۵۶۷۸۹",
]

GREEK = [
    "Γεια σου κόσμε! Τι κάνεις σήμερα;",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "Ο Σωκράτης ήταν φιλόσοφος της αρχαίας Αθήνας.",
    "ΚΕΦΑΛΑΙΑ ΓΡΑΜΜΑΤΑ ΚΑΙ τελικό σίγμα: λόγος, κόσμος.",
    "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.",
    "Μῆνιν ἄειδε θεὰ Πηληϊάδεω Ἀχιλῆος",
    "Το π είναι περίπου 3,14159· το φ περίπου 1,618.",
    "Διαλυτικά: ϊ ϋ ΐ ΰ — Προϋπόθεση, αϋπνία.",
    "Θα σε δω αύριο στις 8 το πρωί;",
    "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "Ελληνικό ερωτηματικό; και άνω τελεία· σημεία στίξης.",
]

THAI = [
    "สวัสดีครับ ยินดีที่ได้รู้จัก",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "วันนี้อากาศร้อนมาก อย่าลืมดื่มน้ำเยอะๆ นะ",
    "ผมชอบกินข้าวผัดกะเพราไก่ไข่ดาว",
    "โปรแกรมนี้ทำงานได้รวดเร็วและมีประสิทธิภาพ",
    "ราคา ๑๒๕ บาท หรือ 125 บาท",
    "เด็กๆ กำลังเล่นฟุตบอลอยู่ที่สนาม",
    "ขอบคุณมากค่ะ แล้วพบกันใหม่",
    "เชียงใหม่ ภูเก็ต พัทยา และเกาะสมุย เป็นสถานที่ท่องเที่ยวยอดนิยม",
    "ลาว: ສະບາຍດີ ເຈົ້າສະບາຍດີບໍ່",
    "ខ្មែរ: សួស្តី អ្នកសុខសប្បាយទេ",
]

INDIC = [
    "नमस्ते! आप कैसे हैं?",
    "भारत एक विशाल और विविधतापूर्ण देश है।",
    "मैं हिंदी सीख रहा हूँ, यह बहुत सुंदर भाषा है।",
    "दिल्ली भारत की राजधानी है।",
    "कृपया दरवाज़ा बंद कर दीजिए।",
    "संस्कृतम्: सत्यमेव जयते। वसुधैव कुटुम्बकम्।",
    "संख्याएँ: ०१२३४५६७८९ और 0123456789",
    "क्षत्रिय, ज्ञान, श्रम, त्र्यम्बक — संयुक्ताक्षर परीक्षण।",
    "मराठी: तुमचे नाव काय आहे?",
    "বাংলা: আমি বাংলায় গান গাই।",
    "தமிழ்: வணக்கம், எப்படி இருக்கிறீர்கள்?",
    "తెలుగు: మీరు ఎలా ఉన్నారు?",
    "ગુજરાતી: કેમ છો? મજામાં.",
    "ਪੰਜਾਬੀ: ਸਤ ਸ੍ਰੀ ਅਕਾਲ ਜੀ।",
    "മലയാളം: സുഖമാണോ?",
    "ಕನ್ನಡ: ನಮಸ್ಕಾರ, ಹೇಗಿದ್ದೀರಿ?",
    "සිංහල: ආයුබෝවන්!",
    "नेपाली: तपाईंलाई कस्तो छ?",
]

LATIN = [
    "Tiếng Việt: Tôi yêu tiếng Việt vì nó rất đẹp và phong phú.",
    "Hà Nội là thủ đô của Việt Nam; Thành phố Hồ Chí Minh là thành phố lớn nhất.",
    "Chúng tôi sẽ gặp nhau vào lúc tám giờ sáng ngày mai.",
    "Phở bò, bánh mì, bún chả — những món ăn nổi tiếng.",
    "Ăn quả nhớ kẻ trồng cây. Uống nước nhớ nguồn.",
    "Deutsch: Die Straße ist nass, weil es geregnet hat. Grüße aus München!",
    "Donaudampfschifffahrtsgesellschaftskapitänswitwe ist ein langes Wort.",
    "Français : « Où est la bibliothèque ? » demanda-t-il, l'air inquiet.",
    "L'été dernier, nous sommes allés à la plage près de Nice.",
    "Ça m'étonnerait qu'il vienne — il n'aime pas les fêtes.",
    "Español: ¿Dónde está el baño? ¡Muchas gracias, señor!",
    "El niño comió una piña y un jalapeño en la cañada.",
    "Português: Não há razão para pressa; a ação começa às três.",
    "Italiano: Perché non andiamo al mare più spesso? È bellissimo.",
    "Türkçe: İstanbul'da yaşıyorum; ığdır, şeker, çiçek, öğrenci.",
    "Polski: Zażółć gęślą jaźń. Łódź, Kraków i Wrocław.",
    "Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Magyar: Árvíztűrő tükörfúrógép. Jó napot kívánok!",
    "Română: Îmi place să citesc cărți în grădină.",
    "Dansk/Norsk: Blåbærsyltetøy og smørbrød på fjellet.",
    "Svenska: Räksmörgås och köttbullar, tack!",
    "Íslenska: Þú ert frábær; ég elska Ísland.",
    "Lietuvių: Ąžuolas, čia, ęsti, ėjo, įėjimas, šuo, ųsas, ūkis, žiogas.",
    "Latviešu: Ābols, čūska, ģimene, ķirbis, ļoti, ņemt, šodien, žurnāls.",
    "Esperanto: Eĥoŝanĝo ĉiuĵaŭde.",
    "Hrvatski: Đački čvor, šešir, žaba, ćevap.",
    "Cymraeg: Bore da! Sut wyt ti? Llanfairpwllgwyngyll.",
    "Kiswahili: Habari za asubuhi? Nzuri sana, asante.",
    "Yorùbá: Ẹ kú àárọ̀! Ṣé dáadáa ni?",
    "Azərbaycanca: Salam, necəsən? Əla, çox sağ ol.",
    "Հայերեն: Բարեւ, ինչպե՞ս ես։",
    "ქართული: გამარჯობა, როგორ ხარ?",
    "አማርኛ: ሰላም ነው? እንዴት ነህ?",
    "Монгол: Сайн байна уу? Би сайн.",
]

# ----------------------------------------------------------------------------------------------
# code

CODE_C = [
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"Hello, world!\\n\");\n    return 0;\n}\n",
    "static int clamp(int x, int lo, int hi) {\n\tif (x < lo) return lo;\n\tif (x > hi) return hi;\n\treturn x;\n}",
    "for (size_t i = 0; i < n; ++i) {\n    sum += a[i] * b[i];  // dot product\n}\n",
    "typedef struct node {\n    struct node *next;\n    uint64_t key;\n    void *value; /* borrowed */\n} node_t;",
    "#define MAX(a, b) ((a) > (b) ? (a) : (b))\n#define ARRAY_LEN(x) (sizeof(x) / sizeof((x)[0]))",
    "if (!p) {\n\tfprintf(stderr, \"%s:%d: out of memory\\n\", __FILE__, __LINE__);\n\tgoto fail;\n}",
    "int *buf = malloc(n * sizeof *buf);\nmemset(buf, 0, n * sizeof *buf);\nfree(buf);",
    "switch (op) {\ncase OP_ADD: r = a + b; break;\ncase OP_SUB: r = a - b; break;\ndefault: assert(0);\n}",
    "x <<= 3; y >>= 1; z ^= ~w & 0xFF; p->q->r[i][j] = *s++;",
    "/* multi-line\n * comment with    spaces\n */\nconst char *s = \"tab\\there\";",
]

CODE_PY = [
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "class Stack:\n    def __init__(self):\n        self._items = []\n\n    def push(self, x):\n        self._items.append(x)\n\n    def pop(self):\n        return self._items.pop()\n",
    "import numpy as np\n\nx = np.linspace(0, 1, 100)\ny = np.sin(2 * np.pi * x)\nprint(f\"{y.mean():.3f}\")",
    "with open('data.txt', 'r', encoding='utf-8') as f:\n    for line in f:\n        if not line.strip():\n            continue\n        print(line.rstrip())",
    "    if x is None:\n        raise ValueError(\"x must not be None\")\n    elif isinstance(x, (int, float)):\n        return x ** 2\n    else:\n        return [v ** 2 for v in x]",
    "@dataclass(frozen=True)\nclass Point:\n    x: float\n    y: float\n\n    def norm(self) -> float:\n        return (self.x ** 2 + self.y ** 2) ** 0.5",
    "try:\n    result = compute()\nexcept (KeyError, IndexError) as e:\n    log.warning('failed: %s', e)\nfinally:\n    cleanup()",
    "squares = {k: v**2 for k, v in zip('abc', range(3))}\nlambda_ = lambda *args, **kw: (args, kw)",
    "async def fetch(session, url):\n    async with session.get(url) as resp:\n        return await resp.json()",
    "\t\tdeeply_indented_with_tabs = True\n\t\t\tif deeply_indented_with_tabs:\n\t\t\t\tpass",
]

CODE_JS = [
    "function greet(name) {\n  return `Hello, ${name}!`;\n}\nconsole.log(greet('world'));",
    "const sum = (arr) => arr.reduce((acc, x) => acc + x, 0);\nexport default sum;",
    "document.querySelectorAll('.item').forEach((el, i) => {\n  el.style.opacity = i % 2 === 0 ? '1' : '0.5';\n});",
    "async function load() {\n  try {\n    const res = await fetch('/api/v1/users?limit=10');\n    if (!res.ok) throw new Error(res.statusText);\n    return await res.json();\n  } catch (err) {\n    console.error(err);\n  }\n}",
    "let x = a ?? b; let y = obj?.prop?.[key]; x ||= 1; y &&= 2; z **= 3;",
    "class Counter extends EventEmitter {\n  #count = 0;\n  increment() { this.emit('change', ++this.#count); }\n}",
    "const re = /^(?:\\d{3}-){2}\\d{4}$/u;\nif (!re.test(phone)) { return false; }",
    "interface User { id: number; name: string; tags?: string[] }\ntype Maybe<T> = T | null | undefined;",
]

CODE_RS = [
    "fn main() {\n    let v: Vec<i32> = (1..=10).collect();\n    println!(\"{:?}\", v);\n}",
    "impl<T: Clone> Stack<T> {\n    pub fn push(&mut self, item: T) {\n        self.items.push(item);\n    }\n}",
    "match value {\n    Some(x) if x > 0 => println!(\"positive: {}\", x),\n    Some(_) => println!(\"non-positive\"),\n    None => {}\n}",
    "#[derive(Debug, Clone, PartialEq)]\npub struct Config<'a> {\n    pub name: &'a str,\n    pub threads: usize,\n}",
    "let s = String::from(\"héllo\");\nlet r: &str = &s[..];\nlet n = s.chars().filter(|c| c.is_alphabetic()).count();",
    "unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), len); }",
    "pub async fn handler(State(db): State<Pool>) -> Result<Json<Vec<Item>>, AppError> {\n    Ok(Json(db.items().await?))\n}",
]

CODE_SQL = [
    "SELECT u.id, u.name, COUNT(o.id) AS orders\nFROM users u\nLEFT JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01'\nGROUP BY u.id, u.name\nHAVING COUNT(o.id) > 5\nORDER BY orders DESC\nLIMIT 10;",
    "CREATE TABLE IF NOT EXISTS items (\n  id BIGSERIAL PRIMARY KEY,\n  sku VARCHAR(32) NOT NULL UNIQUE,\n  price NUMERIC(10, 2) DEFAULT 0.00\n);",
    "INSERT INTO logs (level, msg) VALUES ('WARN', 'disk 91% full'), ('INFO', 'it''s fine');",
    "UPDATE accounts SET balance = balance - 100 WHERE id = 42 AND balance >= 100;",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 100) SELECT SUM(n) FROM t;",
    "delete from sessions where expires_at < now() - interval '30 days';",
]

CODE_SH = [
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n  echo \"processing $f\"\n  wc -l \"$f\"\ndone",
    "find . -name '*.c' -print0 | xargs -0 grep -n 'TODO' | sort | uniq -c",
    "export PATH=\"$HOME/.local/bin:$PATH\"\nif [ -z \"${CC:-}\" ]; then CC=gcc; fi",
    "curl -fsSL https://example.com/install.sh | bash -s -- --prefix=/opt/tool",
    "tar -czvf backup-$(date +%Y%m%d).tar.gz ~/docs 2>/dev/null && echo ok || echo fail",
    "awk -F, '{ s += $3 } END { printf \"%.2f\\n\", s / NR }' data.csv",
    "docker run --rm -it -v \"$PWD\":/src -w /src ubuntu:22.04 bash -lc 'make -j$(nproc)'",
]

CODE_JSON = [
    "{\"name\": \"tierlm\", \"version\": \"0.1.0\", \"private\": true}",
    "{\n  \"model_type\": \"qwen2\",\n  \"hidden_size\": 5120,\n  \"num_attention_heads\": 40,\n  \"rope_theta\": 1000000.0,\n  \"tie_word_embeddings\": false\n}",
    "[{\"id\":1,\"tags\":[\"a\",\"b\"],\"score\":0.97},{\"id\":2,\"tags\":[],\"score\":null}]",
    "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":\"Hi!\"}]}",
    "{\"escaped\": \"line1\\nline2\\t\\\"quoted\\\" \\u00e9\", \"empty\": {}, \"nested\": [[[]]]}",
]

CODE_HTML = [
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>Test</title>\n</head>\n<body>\n  <p class=\"intro\">Hello &amp; welcome!</p>\n</body>\n</html>",
    "<div id=\"app\"><ul><li><a href=\"/home\">Home</a></li><li><a href=\"/about?x=1&amp;y=2\">About</a></li></ul></div>",
    "<script>\n  window.onload = () => alert(\"loaded\");\n</script>\n<style>\n  body { margin: 0; font: 14px/1.5 sans-serif; }\n</style>",
    "<img src=\"cat.png\" alt=\"A cat &lt;3\" width=\"320\" height=\"240\" />&nbsp;&copy; 2024",
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<note><to>Tove</to><from>Jani</from><body>Don't forget me this weekend!</body></note>",
    "# Heading\n\n- item one\n- item **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```",
]

# ----------------------------------------------------------------------------------------------
# emoji

EMOJI_BASE = [
    "😀", "😂", "🤣", "😍", "🥰", "😎", "🤔", "😴", "😭", "😡", "👍", "👎", "👏", "🙏", "💪",
    "🔥", "✨", "🎉", "❤", "💔", "💯", "🚀", "🌍", "🌈", "☀", "⛄", "🍕", "🍣", "🍺", "☕", "🐶",
    "🐱", "🦄", "🐍", "🦀", "🎵", "📱", "💻", "⌨", "🖥", "📈", "✅", "❌", "⚠", "♻", "©", "®",
    "™", "🫠", "🫶", "🥹", "🫡", "🧑", "👶", "🧓", "🤷", "🤦", "🙋", "🏃", "🚴",
]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
ZWJ = "\u200d"
VS16 = "\ufe0f"
VS15 = "\ufe0e"
EMOJI_ZWJ = [
    "👨" + ZWJ + "👩" + ZWJ + "👧" + ZWJ + "👦",
    "👩" + ZWJ + "❤" + VS16 + ZWJ + "👨",
    "👩" + ZWJ + "💻",
    "👨\U0001F3FD" + ZWJ + "🚀",
    "🧑\U0001F3FF" + ZWJ + "🔬",
    "🏳" + VS16 + ZWJ + "🌈",
    "🏴" + ZWJ + "☠" + VS16,
    "🐕" + ZWJ + "🦺",
    "🐻" + ZWJ + "❄" + VS16,
    "👁" + VS16 + ZWJ + "🗨" + VS16,
    "🤷\U0001F3FE" + ZWJ + "♀" + VS16,
    "🏃" + ZWJ + "♂" + VS16,
    "👩\U0001F3FB" + ZWJ + "🤝" + ZWJ + "👨\U0001F3FF",
    "❤" + VS16 + ZWJ + "🔥",
]
FLAGS = ["🇯🇵", "🇺🇸", "🇬🇧", "🇩🇪", "🇫🇷", "🇨🇳", "🇰🇷", "🇧🇷", "🇮🇳", "🇺🇦", "🇪🇺", "🇺🇳"]
TAG_FLAGS = [
    "🏴\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",  # England
    "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",  # Scotland
    "🏴\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F",  # Wales
]
KEYCAPS = [c + VS16 + "\u20e3" for c in "0123456789#*"] + ["1\u20e3", "#\u20e3"]

# ----------------------------------------------------------------------------------------------
# special-token text the user might type

SPECIAL_TEXT = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>",
    "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_250|>", "<|finetune_right_pad_id|>", "<|python_tag|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>", "<｜fim▁hole｜>", "<｜▁pad▁｜>", "<think>",
    "</think>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|repo_name|>", "<|file_sep|>", "<|vision_start|>", "<|image_pad|>",
]
SPECIAL_NEAR = [
    "<|im_sta", "<|im_start", "<|im_start|", "|im_start|>", "im_start|>", "<|IM_START|>",
    "< |im_start|>", "<|im_start |>", "<||>", "<|>", "<|", "|>", "<<|im_start|>>",
    "<|im_start<|im_end|>|>", "<|endoftext", "endoftext|>", "<|begin_of_text", "<|eot_id",
    "<｜begin▁of▁sentence", "begin▁of▁sentence｜>", "<|begin▁of▁sentence|>", "<｜User", "<think",
    "think>", "</think", "<thinking>", "<Think>", "<THINK>", "<tool_cal", "<|reserved_special_token_|>",
    "<|reserved_special_token_99999|>", "▁", "｜", "<s>", "</s>", "[INST]", "<<SYS>>", "<unk>",
]

# ----------------------------------------------------------------------------------------------
# Unicode edge cases

UNICODE_EDGE = [
    "cafe\u0301 vs café",                      # decomposed vs precomposed é
    "e\u0301e\u0301e\u0301",
    "A\u030a ngstro\u0308m, \u212b, Å",        # Å three ways (U+212B is a singleton -> U+00C5)
    "\u212a elvin and \u2126 hm",               # Kelvin sign -> K, Ohm sign -> Ω under NFC
    "Vie\u0302\u0323t Nam vs Việt Nam vs Vie\u0323\u0302t Nam",  # canonical reordering
    "Tie\u0302\u0301ng Vie\u0323\u0302t co\u0301 da\u0302\u0301u",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",   # conjoining jamo -> 각 한글
    "\u1100\u1161 \u1100 \u1161 \u11a8",                          # jamo that (partly) compose
    "q\u0307 x\u0323\u0307 n\u0303",                              # marks without a composite
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333!",
    "zero\u200bwidth\u200bspace and zero\u200cwidth\u200cnon\u200djoiner",
    "\ufeffBOM at the start",
    "\ufeff",
    "word\u00a0joined by NBSP\u00a0\u00a0twice",
    "thin\u2009space, hair\u200aspace, en\u2002space, em\u2003space, figure\u2007space",
    "ideographic\u3000space\u3000全角\u3000スペース",
    "narrow\u202fno-break, medium\u205fmath space, ogham\u1680mark",
    "line\u2028separator and paragraph\u2029separator",
    "next\u0085line (NEL) inside",
    "soft\u00adhyphen and word\u2060joiner",
    "LRM\u200e RLM\u200f LRE\u202a PDF\u202c RLO\u202eevil\u202c",
    "fullwidth ＡＢＣ ａｂｃ １２３ ！？",
    "ligatures ﬁ ﬂ ﬀ ﬃ and ŉ Ǆ ǅ ǆ",
    "CJK compatibility \uf900 \uf901 \uf902 \uf91d (U+F900..) -> unified under NFC",
    "\u0915\u094d\u0937 \u0930\u094d\u092f",     # Devanagari conjuncts from virama
    "\u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629",
    "a\u0308\u0304 vs ǟ",                         # ǟ = a + diaeresis + macron
    "\u00c5\u0301 Ǻ",
    "\u0041\u030a\u0301",
    "\u1e9b\u0323",                              # long s with dot above + dot below
    "d\u0323\u0307 vs d\u0307\u0323",         # canonical order of two marks
    "\u0ca1\u0cbc vs \u0ca1",
    "\u0958\u0959\u095a",                        # composition exclusions (stay decomposed)
    "\u2000\u2001 em quad + en quad (singletons -> U+2002/U+2003)",
    "\u0340\u0341 tone marks (singletons)",
    "\u2126 \u03a9 \u03c9",
    "\u00e9\u0301",
    "i\u0307 İ ı I",
    "ǅungla Ǆ ǆ",
    "ß ẞ SS ss",
    "\ufb01le \ufb02ow",
    "ﷺ ﷽",
    "\u0300leading combining mark",
    "\u0301",
    "\u200d",
    "\u200b\u200b\u200b",
    "a\u200db",
    "\ufe0f\ufe0f",
    "\u034f grapheme joiner",
    "\u180e mongolian vowel separator",
    "\u3164 hangul filler \u115f\u1160",
    "\U0001d400\U0001d401\U0001d402 \U0001d538\U0001d539 \U0001d7ce\U0001d7cf",  # math alnum
    "\U00010400\U00010401 deseret, \U00013000 hieroglyph, \U0001f600 emoji, \U00020000 ext-B",
    "\ue000\ue001 private use \uf8ff",
    "\u00b2\u00b3\u00b9 \u00bc\u00bd\u00be \u2160\u2161\u2162 \u2460\u2461 \u3007",
    "\u0660\u0661\u0662 \u06f0\u06f1 \u0966\u0967 \uff10\uff11 \u1040\u1041",
]

UNICODE_SPACES = [
    "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
    "\u2007", "\u2008", "\u2009", "\u200a", "\u202f", "\u205f", "\u3000", "\u2028", "\u2029",
    "\u0085", "\u000b", "\u000c", "\u200b", "\ufeff", "\u180e", "\u001c", "\u001f", "\u2060",
    "\u00ad",
]

WS_RUNS = [
    " ", "  ", "   ", "    ", "\t", "\t\t", " \t", "\t ", "\n", "\n\n", "\n\n\n", "\r\n",
    "\r\n\r\n", "\r", "\r\r", " \n", "\n ", "  \n  ", " \r\n ", "\t\n\t", "\n\t\t", "\n    ",
    "\n        ", "\u00a0", "\u3000", "\u2009", " \u00a0 ", "\u000b", "\u000c", "\r \n",
]

# ----------------------------------------------------------------------------------------------
# long words, URLs, math

LONG = [
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "Supercalifragilisticexpialidocious",
    "Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "Taumatawhakatangihangakoauauotamateaturipukakapikimaungahoronukupokaiwhenuakitanatahu",
    "muvaffakiyetsizleştiricileştiriveremeyebileceklerimizdenmişsinizcesine",
    "hippopotomonstrosesquippedaliophobia",
    "antidisestablishmentarianism",
]

URLS = [
    "https://www.example.com/path/to/page.html?query=hello%20world&lang=en#section-2",
    "http://localhost:8080/api/v1/models/deepseek-r1-distill-qwen-14b/generate",
    "ftp://user:p%40ss@files.example.org:21/pub/README.txt",
    "https://ja.wikipedia.org/wiki/日本語",
    "https://xn--mnchen-3ya.de/straße?q=über",
    "mailto:first.last+tag@sub.example.co.uk",
    "git@github.com:owner/repo.git",
    "C:\\Users\\Public\\Documents\\report (final) v2.docx",
    "/usr/local/lib/python3.11/site-packages/torch/__init__.py",
    "s3://bucket-name/some/prefix/part-00000-3f2a.snappy.parquet",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "https://example.com/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/index.php?id=1234567890",
]

MATH = [
    "∀x ∈ ℝ, ∃y ∈ ℕ : y > x",
    "∑_{i=1}^{n} i = n(n+1)/2",
    "∫₀^∞ e^{−x²} dx = √π / 2",
    "E = mc², a² + b² = c², H₂O, CO₂",
    "\\frac{\\partial L}{\\partial \\theta} = \\sum_i (y_i - \\hat{y}_i) x_i",
    "A ⊆ B ⇔ ∀a (a ∈ A ⇒ a ∈ B); A ∩ ∅ = ∅; |ℤ| = ℵ₀",
    "f(x) = { x² if x ≥ 0; −x otherwise }",
    "≤ ≥ ≠ ≈ ≡ ± × ÷ ∞ ∂ ∇ ∏ √ ∛ ∜ ∝ ∠ ⊕ ⊗ ⊥ ∧ ∨ ¬",
    "α + β = γ; λx.x; μ ± σ; Δt → 0",
    "1/3 ≈ 0.333…; π ≈ 3.14159265358979323846; e ≈ 2.71828",
    "matrix [[1, 2], [3, 4]]ᵀ = [[1, 3], [2, 4]]",
    "x_{n+1} = x_n − f(x_n)/f'(x_n)",
    "𝔸𝔹ℂ 𝕏𝕐ℤ 𝒜ℬ𝒞 𝐀𝐁𝐂 𝟎𝟏𝟐",
    "→ ← ↑ ↓ ↔ ⇒ ⇐ ⇔ ↦ ⟶ ⟹",
]

MIXED = [
    "Tokyo東京とうきょうTōkyō", "iPhone15ProMax", "naïve-café-crème", "москваMoscowМосква",
    "abc123def456", "中文English混合text", "K팝K-pop케이팝", "GPT4o和Claude3.5", "ΑλφαBetaГамма",
    "x²+y²=r²", "Ĳsselmeer", "ﬁnancial", "日本語のtext", "한국어English섞기", "العربيةArabic",
    "שלוםhello", "हिंदीHindi", "ไทยThai", "co-op'ing", "e-mail@домен.рф", "C++/C#/F#", "3D打印",
    "H₂O水", "5G网络", "COVID-19疫情", "ab'cd'ef", "A1B2C3", "über2000", "π314", "10x工程师",
    "αβγ123ДЖЗ", "🙂smile😀grin", "tab\tin\tword", "snake_case_Variable", "camelCaseVariable",
    "kebab-case-variable", "SCREAMING_SNAKE_CASE", "__dunder__", "$dollar$sign", "#hashtag",
    "@mention", "user.name", "v1.2.3-beta.4+build.5", "A/B", "Ø/ø", "ʻokina", "ʼapostrophe",
]

# ----------------------------------------------------------------------------------------------
# fuzz pools: fixed character lists (no unicodedata lookups, so every Python gives the same file)

def crange(a, b):
    return [chr(c) for c in range(a, b + 1)]


FUZZ_POOLS = [
    (30, list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")),
    (12, list("0123456789")),
    (14, list(" !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")),
    (14, [" ", " ", " ", "\t", "\n", "\r", "\r\n", "\n\n", "  "]),
    (6, ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", " '", "' "]),
    (6, crange(0x4E00, 0x9FA5)),
    (3, crange(0x3041, 0x3096) + crange(0x30A1, 0x30FA)),
    (3, crange(0xAC00, 0xD7A3)),
    (3, crange(0x0410, 0x044F)),
    (2, crange(0x0391, 0x03A1) + crange(0x03A3, 0x03C9)),
    (2, crange(0x05D0, 0x05EA) + crange(0x0621, 0x063A) + crange(0x0641, 0x064A)),
    (2, crange(0x0E01, 0x0E3A) + crange(0x0905, 0x0939)),
    (4, crange(0x00C0, 0x00D6) + crange(0x00D8, 0x00F6) + crange(0x0100, 0x017F)),
    (4, crange(0x0300, 0x0341) + ["\u0345"] + crange(0x0350, 0x036F)),
    (3, crange(0x2000, 0x200A) + ["\u00a0", "\u3000", "\u202f", "\u205f", "\u200b", "\u200c",
                                  "\u200d", "\u2060", "\u00ad", "\u2028", "\u2029", "\u0085",
                                  "\u000b", "\u000c", "\ufeff", "\u180e"]),
    (3, crange(0x2010, 0x2027) + crange(0x2190, 0x21FF) + crange(0x2200, 0x22FF)),
    (3, [e for e in EMOJI_BASE] + SKIN + [ZWJ, VS16, VS15, "\u20e3"] + crange(0x1F1E6, 0x1F1FF)),
    (2, crange(0xFF01, 0xFF5E) + crange(0xFF61, 0xFF9F) + crange(0x3000, 0x303F)),
    (2, list("²³¹¼½¾") + crange(0x2150, 0x2188) + crange(0x2460, 0x249B) + crange(0x0660, 0x0669)
     + crange(0x06F0, 0x06F9) + crange(0x0966, 0x096F) + crange(0x1D7CE, 0x1D7FF)),
    (1, crange(0x1D400, 0x1D454) + crange(0x10400, 0x1044F) + crange(0x20000, 0x2004F)),
    (1, crange(0x0001, 0x0008) + crange(0x000E, 0x001F) + ["\x7f"] + crange(0x0080, 0x009F)),
    (1, ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<think>",
         "</think>", "<｜begin▁of▁sentence｜>", "<｜User｜>", "<|eot_id|>", "<|im_sta", "|>", "<|"]),
]


def fuzz_char(rng):
    total = sum(w for w, _ in FUZZ_POOLS)
    r = rng.below(total)
    for w, pool in FUZZ_POOLS:
        if r < w:
            return rng.pick(pool)
        r -= w
    raise AssertionError


# ----------------------------------------------------------------------------------------------
# generators; each returns a list of strings


def join_sentences(rng, bank, lo, hi, sep_choices):
    n = rng.between(lo, hi)
    parts = [rng.pick(bank) for _ in range(n)]
    out = parts[0]
    for p in parts[1:]:
        out += rng.pick(sep_choices) + p
    return out


def case_variant(rng, s):
    k = rng.below(10)
    if k == 0:
        return s.upper()
    if k == 1:
        return s.lower()
    if k == 2:
        return s.title()
    if k == 3:
        return "".join(c.upper() if rng.chance(50) else c.lower() for c in s)
    return s


def gen_english(rng):
    out = list(EN)
    for _ in range(330):
        s = join_sentences(rng, EN, 1, 6, [" ", " ", " ", "  ", "\n", "\n\n", " \n"])
        s = case_variant(rng, s)
        if rng.chance(10):
            s = " " + s
        if rng.chance(10):
            s = s + rng.pick([" ", "  ", "\n", "\t", " \n"])
        if rng.chance(8):
            s = s.replace("'", "\u2019")
        if rng.chance(5):
            s = s.replace('"', rng.pick(["\u201c", "\u201d", "''", "``"]))
        out.append(s)
    return out


def gen_contractions(rng):
    out = []
    words = EN_CONTRACTION_WORDS
    for w in words:
        out.append(w)
    for _ in range(130):
        n = rng.between(2, 12)
        toks = []
        for _ in range(n):
            if rng.chance(60):
                toks.append(rng.pick(words))
            else:
                toks.append(rng.pick(["I", "you", "he", "She", "IT", "we", "They", "1", "42",
                                      "x", "the", "cat", "dog's", "\"", "(", ")", "...", "-",
                                      "é", "中", "😀"]))
        sep = rng.pick([" ", " ", "", "  ", "\t", "\n"])
        out.append(sep.join(toks))
    return out


def gen_script(rng, bank, n_extra, seps):
    out = list(bank)
    for _ in range(n_extra):
        s = join_sentences(rng, bank, 1, 5, seps)
        if rng.chance(15):
            s = s + rng.pick(["\n", " ", "\n\n", "\r\n"])
        if rng.chance(10):
            s = rng.pick([" ", "\n", "  "]) + s
        out.append(s)
    return out


def gen_code(rng, snippets, n_extra):
    out = list(snippets)
    for _ in range(n_extra):
        k = rng.below(6)
        s = rng.pick(snippets)
        if k == 0:  # a slice of consecutive lines
            lines = s.split("\n")
            a = rng.below(len(lines))
            b = rng.between(a, len(lines) - 1)
            s = "\n".join(lines[a:b + 1])
        elif k == 1:  # CRLF line endings
            s = s.replace("\n", "\r\n")
        elif k == 2:  # re-indented: 4 spaces <-> tab, or deeper
            if "    " in s:
                s = s.replace("    ", rng.pick(["\t", "  ", "        "]))
            else:
                s = s.replace("\t", "    ")
        elif k == 3:  # two snippets in one document
            s = s + rng.pick(["\n\n", "\n", "\n\n\n"]) + rng.pick(snippets)
        elif k == 4:  # indented block with trailing spaces
            s = "\n".join(("    " + l + rng.pick(["", " ", "  "])) if l else l
                          for l in s.split("\n"))
        out.append(s)
    return out


def gen_numbers(rng):
    out = ["0", "1", "12", "123", "1234", "12345", "123456", "1234567", "1234567890123",
           "00000000", "007", "3.14", "3.14159265358979", "0.5", ".5", "5.", "1,000",
           "1,000,000", "1.000.000,50", "1 000 000", "1_000_000", "1e10", "6.022e23",
           "-273.15", "+1", "1/2", "3:45", "12:30:59.999", "2024-01-15", "15/01/2024",
           "01.15.2024", "2024-01-15T08:30:00Z", "2024年1月15日", "2024년 1월 15일",
           "+1 (555) 123-4567", "192.168.0.1", "::1", "0x7FFFFFFF", "0b101010", "0o755",
           "$1,234.56", "€99,99", "¥10000", "£5", "50%", "100km/h", "v2.0.1", "ISBN 978-3-16-148410-0",
           "4111 1111 1111 1111", "１２３４５", "٠١٢٣٤٥٦٧٨٩", "१२३४५", "²³", "½", "Ⅻ", "①②③",
           "10⁻⁹", "H₂SO₄", "9" * 64, "1" * 100, "1234567890" * 20]
    for _ in range(170):
        k = rng.below(10)
        if k == 0:
            s = str(rng.below(10 ** rng.between(1, 40)))
        elif k == 1:
            s = "%d.%0*d" % (rng.below(100000), rng.between(1, 12), rng.below(10 ** 12) % 10 ** 12)
        elif k == 2:
            s = "{:,}".format(rng.below(10 ** rng.between(4, 16)))
        elif k == 3:
            s = "%04d-%02d-%02d" % (rng.between(1900, 2100), rng.between(1, 12), rng.between(1, 28))
        elif k == 4:
            s = " ".join(str(rng.below(1000)) for _ in range(rng.between(2, 20)))
        elif k == 5:
            s = ",".join(str(rng.below(100000)) for _ in range(rng.between(2, 15)))
        elif k == 6:
            s = "%s%d %s" % (rng.pick(["$", "€", "¥", "", "#", "No. ", "x"]), rng.below(10 ** 7),
                            rng.pick(["items", "apples", "個", "개", "штук", "km", "ms", ""]))
        elif k == 7:
            s = "".join(rng.pick("0123456789") for _ in range(rng.between(1, 60)))
            s = rng.pick(["", " ", "abc", "x", "中"]) + s + rng.pick(["", " ", "abc", "%", "元"])
        elif k == 8:
            s = "%d:%02d %s, %d/%d/%d" % (rng.between(1, 12), rng.below(60),
                                         rng.pick(["AM", "PM", "a.m.", "p.m."]),
                                         rng.between(1, 12), rng.between(1, 31),
                                         rng.between(1990, 2030))
        else:
            s = "%.*f" % (rng.between(0, 8), rng.below(10 ** 9) / float(rng.between(1, 9999)))
            if rng.chance(30):
                s = "-" + s
        out.append(s)
    return out


def gen_emoji(rng):
    out = []
    for e in EMOJI_BASE[:20] + EMOJI_ZWJ + FLAGS[:4] + TAG_FLAGS + KEYCAPS[:4]:
        out.append(e)
    words = ["love", "this", "so", "much", "lol", "ok", "great", "job", "party", "time", "好",
             "すごい", "최고", "класс", "!", "!!!", "?", ""]
    for _ in range(160):
        n = rng.between(1, 10)
        parts = []
        for _ in range(n):
            k = rng.below(9)
            if k == 0:
                parts.append(rng.pick(EMOJI_BASE) + rng.pick(SKIN))
            elif k == 1:
                parts.append(rng.pick(EMOJI_ZWJ))
            elif k == 2:
                parts.append(rng.pick(FLAGS))
            elif k == 3:
                parts.append(rng.pick(KEYCAPS))
            elif k == 4:
                parts.append(rng.pick(EMOJI_BASE) + rng.pick([VS16, VS15, ""]))
            elif k == 5:
                parts.append(rng.pick(TAG_FLAGS))
            elif k == 6:
                parts.append(rng.pick(EMOJI_BASE) * rng.between(2, 6))
            else:
                parts.append(rng.pick(words))
        out.append(rng.pick([" ", "", " ", "\n"]).join(parts))
    return out


def gen_whitespace(rng):
    out = ["", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n\n", " \n ", "   trailing   ",
           "\tleading tab", "trailing tab\t", "a\n", "a\r\n", "a\r", "\na", "\r\na", "\ra",
           "a \n b", "a  \n\n  b", "a\t\t\tb", "a\r\rb", "a\n\r\nb", "a \r\n b", " " * 40,
           "\n" * 40, "\t" * 20, "x" + " " * 100 + "y", "\r\n" * 30, " \t" * 25, "end.   ",
           "  1", "  12345", "  !", "  '", "  's", "\n's", " \n's", "a  's", "a '  s"]
    words = ["hello", "world", "foo", "bar", "42", "3.5", "!", "?", "-", "(x)", "中文", "日本",
             "한국", "мир", "'s", "don't", ".", ",", "...", "😀", "é", "\u00a0"]
    for _ in range(180):
        n = rng.between(1, 12)
        s = ""
        for i in range(n):
            if i or rng.chance(30):
                s += rng.pick(WS_RUNS) * rng.between(1, 3)
            s += rng.pick(words)
        if rng.chance(40):
            s += rng.pick(WS_RUNS) * rng.between(1, 4)
        out.append(s)
    return out


def gen_unicode(rng):
    out = list(UNICODE_EDGE)
    # each candidate space where regex engines disagree on \s (JavaScript, PCRE2, Oniguruma)
    # decides a pre-token boundary: beside letters, digits, punctuation, spaces, contractions
    for sp in UNICODE_SPACES:
        out.append("a" + sp + "b" + sp + sp + "c " + sp + "d" + sp + " e" + sp + "\n" + sp + "1"
                   + sp + "!" + sp)
        out.append("x" + sp + "!" + sp + sp + "?" + sp + " ." + sp + "\n" + sp + "'s" + sp + "'"
                   + sp + "\t" + sp + "(" + sp * 3 + ")" + sp + "\r\n")
    marks = crange(0x0300, 0x0341) + crange(0x0346, 0x036F)
    bases = list("aeiouAEIOUnNcCyYsSzZgGhHkKqQ") + ["α", "ω", "и", "е", "ا", "ש", "ก"]
    for _ in range(70):
        s = ""
        for _ in range(rng.between(1, 12)):
            s += rng.pick(bases)
            for _ in range(rng.below(4)):
                s += rng.pick(marks)
            if rng.chance(20):
                s += rng.pick([" ", "\u200b", "\u200d", "\u200c", "\u00a0", "\u2009"])
        out.append(s)
    # Hangul: precomposed, conjoining jamo (NFC composes them), and lone jamo
    for _ in range(30):
        s = ""
        for _ in range(rng.between(1, 8)):
            k = rng.below(3)
            if k == 0:
                s += chr(rng.between(0xAC00, 0xD7A3))
            elif k == 1:
                s += chr(rng.between(0x1100, 0x1112)) + chr(rng.between(0x1161, 0x1175))
                if rng.chance(50):
                    s += chr(rng.between(0x11A8, 0x11C2))
            else:
                s += chr(rng.between(0x3131, 0x318E))
            if rng.chance(25):
                s += " "
        out.append(s)
    return out


def gen_special(rng):
    out = list(SPECIAL_TEXT) + list(SPECIAL_NEAR)
    filler = ["Hello", " world", "\n", "system", "user", "assistant", "You are helpful.", " ",
              "  ", "2+2=4", "中文", "思考", "Let me think.", "\n\n", "'s", "!"]
    toks = SPECIAL_TEXT + SPECIAL_NEAR
    for _ in range(110):
        s = ""
        for _ in range(rng.between(2, 10)):
            s += rng.pick(toks) if rng.chance(45) else rng.pick(filler)
        out.append(s)
    # chat transcripts as the templates render them, typed into a user message
    out.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "What's 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nEasy.\n</think>\n\n4<|im_end|>\n")
    out.append("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>"
               "assistant<|end_header_id|>\n\n")
    out.append("<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Why is the sky blue?"
               "<｜Assistant｜><think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh "
               "scattering.<｜end▁of▁sentence｜>")
    out.append("<|im_start|><|im_start|><|im_end|><|im_end|><|endoftext|><|endoftext|>")
    out.append(" <|im_start|> \n<|im_end|>\t<think> </think>  ")
    return out


def gen_long(rng):
    out = list(LONG) + list(URLS) + list(MATH)
    out.append("a" * 3000)
    out.append("ab" * 1500)
    out.append("abc " * 500)
    out.append("!" * 500)
    out.append("." * 1000)
    out.append("-" * 200 + "\n" + "=" * 200)
    out.append("_" * 300)
    out.append("中" * 1000)
    out.append("あ" * 500)
    out.append("😀" * 300)
    out.append("\u0301" * 100)
    out.append(" " * 1000 + "x")
    out.append("0123456789abcdef" * 100)
    out.append("".join(rng.pick("abcdefghijklmnopqrstuvwxyz") for _ in range(4000)))
    out.append("".join(rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                       for _ in range(3000)) + "==")
    out.append("".join(chr(rng.between(0x4E00, 0x9FA5)) for _ in range(3000)))
    out.append("".join(chr(rng.between(0xAC00, 0xD7A3)) for _ in range(1500)))
    for _ in range(40):
        k = rng.below(4)
        if k == 0:
            s = "".join(rng.pick("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.between(30, 400)))
        elif k == 1:
            s = "%032x%032x" % (rng.next64(), rng.next64())
            s = rng.pick(["sha256:", "0x", "commit ", "id="]) + s
        elif k == 2:
            s = "https://%s.%s/%s?%s" % (
                "".join(rng.pick("abcdefghij") for _ in range(rng.between(3, 12))),
                rng.pick(["com", "org", "io", "co.jp", "рф", "中国"]),
                "/".join("".join(rng.pick("abcxyz019-_") for _ in range(rng.between(1, 10)))
                         for _ in range(rng.between(1, 6))),
                "&".join("%s=%d" % (rng.pick(["q", "id", "page", "utm_source", "lang"]),
                                    rng.below(100000)) for _ in range(rng.between(1, 4))))
        else:
            s = rng.pick(MATH) + " " + rng.pick(MATH)
        out.append(s)
    return out


def gen_mixed(rng):
    out = list(MIXED)
    banks = [EN, ZH, JA, KO, RU, AR_HE, GREEK, THAI, INDIC, LATIN]
    for _ in range(120):
        n = rng.between(2, 5)
        s = ""
        for _ in range(n):
            t = rng.pick(rng.pick(banks))
            if rng.chance(50):  # cut mid-sentence to glue scripts together inside words
                cut = rng.between(1, max(1, len(t) - 1))
                t = t[:cut] if rng.chance(50) else t[cut:]
            s += t + rng.pick(["", "", " ", "\n", "-", "/"])
        out.append(s)
    for _ in range(40):
        out.append(rng.pick(MIXED) + rng.pick(["", " ", "'s", "s", "123", "中"]) + rng.pick(MIXED))
    return out


def gen_fuzz(rng):
    out = []
    for _ in range(260):
        n = rng.between(1, 120) if rng.chance(80) else rng.between(120, 600)
        out.append("".join(fuzz_char(rng) for _ in range(n)))
    return out


def gen_documents(rng):
    """A few longer, realistic multi-paragraph documents (markdown, chat, logs, code review)."""
    out = []
    for _ in range(25):
        parts = []
        for _ in range(rng.between(3, 8)):
            k = rng.below(7)
            if k == 0:
                parts.append("# " + rng.pick(EN).rstrip("."))
            elif k == 1:
                parts.append(join_sentences(rng, EN, 2, 6, [" "]))
            elif k == 2:
                parts.append("\n".join("- " + rng.pick(EN) for _ in range(rng.between(2, 5))))
            elif k == 3:
                lang, bank = rng.pick([("c", CODE_C), ("python", CODE_PY), ("js", CODE_JS),
                                       ("rust", CODE_RS), ("sql", CODE_SQL), ("sh", CODE_SH),
                                       ("json", CODE_JSON), ("html", CODE_HTML)])
                parts.append("```" + lang + "\n" + rng.pick(bank).rstrip("\n") + "\n```")
            elif k == 4:
                parts.append(join_sentences(rng, rng.pick([ZH, JA, KO, RU, LATIN]), 2, 5, ["", " "]))
            elif k == 5:
                parts.append("\n".join("2024-03-%02d %02d:%02d:%02d,%03d %s [%s] %s" % (
                    rng.between(1, 28), rng.below(24), rng.below(60), rng.below(60),
                    rng.below(1000), rng.pick(["INFO", "WARN", "ERROR", "DEBUG"]),
                    rng.pick(["main", "worker-3", "io_uring", "sched"]),
                    rng.pick(["request done in 12.5ms", "cache miss for key 0xdeadbeef",
                              "retrying (attempt 2/5)", "evicted 128 blocks", "OK"]))
                    for _ in range(rng.between(2, 6))))
            else:
                parts.append("> " + rng.pick(EN) + "\n> " + rng.pick(EN))
        out.append(rng.pick(["\n\n", "\n", "\r\n\r\n"]).join(parts))
    return out


# ----------------------------------------------------------------------------------------------


def escape_line(s):
    """JSON string with non-ASCII printed raw except characters that are invisible or that
    editors and line splitters treat specially (controls, format chars, separators, BOM,
    non-ASCII spaces), which become \\uXXXX escapes (surrogate pairs above the BMP)."""
    body = json.dumps(s, ensure_ascii=False)
    out = []
    for c in body:
        cp = ord(c)
        cat = unicodedata.category(c)
        if cp > 0x7E and (cat in ("Cc", "Cf", "Zl", "Zp", "Co") or (cat == "Zs" and c != " ")
                          or cp in (0x034F, 0x115F, 0x1160, 0x3164, 0x180E)):
            if cp > 0xFFFF:
                v = cp - 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)))
            else:
                out.append("\\u%04x" % cp)
        else:
            out.append(c)
    return "".join(out)


def check_assigned(s, where):
    for c in s:
        cp = ord(c)
        if 0xD800 <= cp <= 0xDFFF:
            raise SystemExit("%s: surrogate U+%04X cannot be UTF-8" % (where, cp))
        if unicodedata.unidata_version >= "14.0.0" and unicodedata.category(c) == "Cn":
            raise SystemExit("%s: U+%04X is unassigned in Unicode %s" % (
                where, cp, unicodedata.unidata_version))


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus.jsonl")
    rng = Rng(0x7469_6572_6C6D)  # "tierlm"
    seps_cjk = ["", "", "\n", " ", "\n\n"]
    seps_sp = [" ", " ", "\n", "  ", "\n\n"]
    # (category, generator); order is the order in the file
    cats = [
        ("english", lambda: gen_english(rng)),
        ("contractions+quotes", lambda: gen_contractions(rng)),
        ("chinese", lambda: gen_script(rng, ZH, 110, seps_cjk)),
        ("japanese", lambda: gen_script(rng, JA, 110, seps_cjk)),
        ("korean", lambda: gen_script(rng, KO, 90, seps_sp)),
        ("cyrillic", lambda: gen_script(rng, RU, 90, seps_sp)),
        ("arabic+hebrew", lambda: gen_script(rng, AR_HE, 90, seps_sp)),
        ("greek", lambda: gen_script(rng, GREEK, 55, seps_sp)),
        ("thai+lao+khmer", lambda: gen_script(rng, THAI, 55, seps_cjk)),
        ("devanagari+indic", lambda: gen_script(rng, INDIC, 60, seps_sp)),
        ("latin-diacritics (vi, de, fr, ...)", lambda: gen_script(rng, LATIN, 80, seps_sp)),
        ("code: C", lambda: gen_code(rng, CODE_C, 30)),
        ("code: Python", lambda: gen_code(rng, CODE_PY, 30)),
        ("code: JavaScript/TS", lambda: gen_code(rng, CODE_JS, 30)),
        ("code: Rust", lambda: gen_code(rng, CODE_RS, 30)),
        ("code: SQL", lambda: gen_code(rng, CODE_SQL, 30)),
        ("code: shell", lambda: gen_code(rng, CODE_SH, 30)),
        ("code: JSON", lambda: gen_code(rng, CODE_JSON, 30)),
        ("code: HTML/XML/Markdown", lambda: gen_code(rng, CODE_HTML, 30)),
        ("numbers+dates", lambda: gen_numbers(rng)),
        ("emoji", lambda: gen_emoji(rng)),
        ("whitespace runs", lambda: gen_whitespace(rng)),
        ("unicode edge (NFC, marks, jamo, ZW*, BOM, spaces)", lambda: gen_unicode(rng)),
        ("special-token text", lambda: gen_special(rng)),
        ("long words, URLs, math", lambda: gen_long(rng)),
        ("mixed scripts", lambda: gen_mixed(rng)),
        ("documents", lambda: gen_documents(rng)),
        ("fuzz", lambda: gen_fuzz(rng)),
    ]
    lines = []
    counts = []
    for name, gen in cats:
        items = gen()
        for i, s in enumerate(items):
            check_assigned(s, "%s #%d" % (name, i))
        counts.append((name, len(items)))
        lines.extend(items)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            f.write(escape_line(s) + "\n")
    size = os.path.getsize(out_path)
    for name, n in counts:
        print("%6d  %s" % (n, name))
    print("%6d  lines, %d bytes -> %s" % (len(lines), size, out_path))


if __name__ == "__main__":
    main()
