//! Basic instruction-override and secret-request rules for further languages: Korean, Turkish,
//! Vietnamese, Indonesian, Bengali, Thai, Dutch, Polish.

use super::Category::{InstructionOverride, SecretRequest};
use super::{r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.ko.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:이전|앞선|위의|위|기존|모든|원래|초기|시스템|당신의|너의)(?:의)? ?(?:[^ ]+ ){0,2}?(?:지시|지침|명령|규칙|지시사항|프롬프트|설정|제한|가이드라인|안내)[^.!?。]{0,12}?(?:무시|잊어|잊으|따르지 ?마|따르지 ?말|폐기)",
    ),
    r(
        "sr.ko.give_secret",
        SecretRequest,
        0.6,
        r"(?:비밀번호|암호|비밀 ?키|api ?키|패스워드|토큰|인증 ?정보)(?:[은는가이를]|를)? ?(?:뭐|무엇|알려|말해|보여|공유|줘|주세요)",
    ),
    r(
        "io.tr.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:öncek[iı]\x{307}?|yukarıdak[iı]\x{307}?|tüm|bütün|önceden veri\x{307}?len|[iı]\x{307}?lk|or[iı]\x{307}?j[iı]\x{307}?nal|s[iı]\x{307}?stem|esk[iı]\x{307}?) (?:[^ ]+ ){0,2}?(?:tal[iı]\x{307}?mat|yönerge|kural|komut|görev|em[iı]\x{307}?r|[iı]\x{307}?stem|yönlend[iı]\x{307}?rme)[a-zçğıöşü\x{307}]* (?:[^ ]+ ){0,2}?(?:yok say|görmezden gel|unut|d[iı]\x{307}?kkate alma|göz ardı et|umursama|boş ver|bırak|uyma)[a-zçğıöşü\x{307}]*|(?:öncek[iı]\x{307}?|tüm) (?:görev|tal[iı]\x{307}?mat)[a-zçğıöşü\x{307}]* bağımsız olarak",
    ),
    r(
        "sr.tr.give_secret",
        SecretRequest,
        0.6,
        r"(?:şifre|parola|gizli anahtar|api anahtar|token|kimlik bilgi)[a-zçğıöşü\x{307}]* (?:nedir|ne|söyle|ver|paylaş|göster|onayla|doğrula)[a-zçğıöşü\x{307}]*|ben sen[iı]\x{307}?n (?:geliştiricin|yaratıcın|patronun|yöneticin|sahibin)[a-zçğıöşü]*",
    ),
    r(
        "io.vi.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:bỏ qua|phớt lờ|quên|lờ đi|không tuân theo|không làm theo|bỏ ngoài tai|gạt bỏ)(?: [^ ]+){0,3}? (?:hướng dẫn|chỉ dẫn|chỉ thị|quy tắc|lệnh|yêu cầu|mệnh lệnh|nhiệm vụ)(?: [^ ]+){0,2}? (?:trước đó|trước|trên|phía trên|ban đầu|của hệ thống|hệ thống|đã cho|cũ)",
    ),
    r(
        "sr.vi.give_secret",
        SecretRequest,
        0.6,
        r"(?:mật khẩu|khóa bí mật|khoá bí mật|khóa api|mã bí mật|mã pin|token)(?: của bạn| là gì| của anh| của chị)",
    ),
    r(
        "io.id.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:abaikan|lupakan|jangan ikuti|jangan patuhi|acuhkan|hiraukan|lewati)(?: [^ ]+){0,3}? (?:instruksi|petunjuk|perintah|aturan|arahan|pedoman|tugas)(?: [^ ]+){0,2}? (?:sebelumnya|di atas|awal|sistem|lama|yang diberikan)|terlepas dari (?:tugas|instruksi|perintah|petunjuk)(?: [^ ]+)? sebelumnya",
    ),
    r(
        "sr.id.give_secret",
        SecretRequest,
        0.6,
        r"(?:kata sandi|kunci rahasia|kunci api|kode rahasia|kredensial) ?(?:anda|kamu|mu)|(?:kata sandi|sandi|kunci rahasia|kunci api|kode rahasia|token|kredensial)(?: apa| itu apa| adalah apa)|(?:berikan|beri tahu|beritahu|sebutkan|bagikan|tunjukkan|konfirmasi|konfirmasikan|mengonfirmasi|mengonfirmasikan)(?: saya| aku)? (?:kata sandi|kunci rahasia|kunci api|kode rahasia|kredensial)",
    ),
    r(
        "io.bn.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:পূর্ববর্তী|আগের|পূর্বের|উপরের|সমস্ত|সব|মূল|প্রাথমিক|সিস্টেম) (?:[^ ]+ ){0,2}?(?:নির্দেশাবলী|নির্দেশাবলি|নির্দেশনা|নির্দেশ|নিয়ম|আদেশ|প্রম্পট)[^ ]* (?:[^ ]+ ){0,2}?(?:উপেক্ষা|ভুলে|অগ্রাহ্য|এড়িয়ে|মানবেন না|মেনো না)",
    ),
    r(
        "sr.bn.give_secret",
        SecretRequest,
        0.6,
        r"(?:আপনার|তোমার) (?:পাসওয়ার্ড|গোপন কী|গোপন চাবি|এপিআই কী|পিন)|(?:পাসওয়ার্ড|গোপন কী|গোপন চাবি) (?:কী|কি|বলুন|বলো|দিন)",
    ),
    r(
        "io.th.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ละเว้น|เพิกเฉย|ไม่สนใจ|ลืม|ข้าม|อย่าทำตาม|ไม่ต้องทำตาม)[^.!?]{0,10}?(?:คำสั่ง|คำแนะนำ|กฎ|ข้อกำหนด|ข้อจำกัด)[^.!?]{0,10}?(?:ก่อนหน้า|ข้างต้น|เดิม|ทั้งหมด|ที่ผ่านมา|ของระบบ)",
    ),
    r(
        "io.nl.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:negeer|vergeet|negeren|vergeten|omzeil) (?:[^ ]+ ){0,3}?(?:vorige|eerdere|voorgaande|bovenstaande|alle|je|jouw|uw|oorspronkelijke|systeem)[a-z]* (?:[^ ]+ ){0,2}?(?:instructies|instructie|regels|richtlijnen|opdrachten|aanwijzingen|prompts?)",
    ),
    r(
        "io.pl.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:zignoruj|ignoruj|zapomnij|pomiń|nie stosuj się do|zlekceważ)(?:cie)? (?:[^ ]+ ){0,3}?(?:poprzedni|wcześniejsz|powyższ|wszystki|swoj|twoj|oryginaln|systemow)[a-ząćęłńóśźż]* (?:[^ ]+ ){0,2}?(?:instrukcj|polece|zasad|reguł|wytyczn)[a-ząćęłńóśźż]*",
    ),
    r(
        "sr.mul.password_games",
        SecretRequest,
        0.55,
        r"(?:password|passwort|kennwort|contraseña|mot de passe|senha|пароль|пароля|паролем|密码|密碼|パスワード|كلمة المرور|كلمة السر|पासवर्ड|şifre|parola|mật khẩu|kata sandi|비밀번호|암호|clé secrète|clave secreta|chave secreta|chiave segreta|секретный ключ|秘密密钥|秘钥|秘密鍵|geheimer schlüssel)(?:[^.!?。！？]){0,60}(?:base64|leetspeak|leet|pig latin|morse|rot13|acrostic|acrostique|akrostichon|acróstico|acrostico|акростих|藏头诗|アクロスティック|हेक्स|बाइनरी|in umgekehrter reihenfolge|en orden inverso|à l['’]envers|al contrario|em ordem inversa|в обратном порядке|倒序|逆順|بالعكس|उल्टे क्रम)",
    ),
    r(
        "io.tl.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:kalimutan|balewalain|huwag pansinin|huwag sundin|ipagwalang-bahala|wag pansinin) (?:ang |mo ang )?(?:lahat ng )?(?:mga )?(?:nauna|naunang|dating|nakaraang|unang|orihinal na|lahat ng) (?:[^ ]+ )?(?:tagubilin|utos|instruksyon|panuto|patakaran|alituntunin)",
    ),
    r(
        "sr.tl.give_secret",
        SecretRequest,
        0.55,
        r"(?:iyong|inyong|ang) password|password mo|(?:ibahagi|ibigay|sabihin)(?: sa akin)? (?:ang )?(?:iyong |inyong )?(?:password|lihim na susi|sikretong code)",
    ),
    r(
        "sr.mul.password_poem",
        SecretRequest,
        0.55,
        r"(?:haiku|poema|poème|poesia|poesía|gedicht|puisi|tula|стих|стихотворение|诗|詩|قصيدة|कविता|şiir|bài thơ|acróstico|acrostique|akrostichon|acrostico|акростих|сонет|sonnet|soneto|canción|chanson|lied|canzone)(?:[^.!?。！？]){0,40}(?:password|passwort|kennwort|contraseña|mot de passe|senha|пароль|пароля|密码|密碼|パスワード|كلمة المرور|كلمة السر|पासवर्ड|şifre|parola|mật khẩu|kata sandi|비밀번호|clé secrète|clave secreta|chave secreta|chiave segreta|секретный ключ)",
    ),
];
