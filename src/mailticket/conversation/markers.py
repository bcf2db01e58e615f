"""What mail clients write around a quoted message, per language.

Data only: the words each client puts on the line that introduces a quote ("On … wrote:"),
the field names of an Outlook-style header block, the separators of original and forwarded
messages, "Sent from my …" taglines and the sign-offs that open a signature. The patterns
are compiled once here; `quotes.py` and `signatures.py` decide what a match means.

Languages: English, Danish, German, French, Spanish, Dutch, Swedish, Norwegian, Finnish,
Polish, Italian, Portuguese, Japanese and Chinese (plus what other languages share with them).
"""

from __future__ import annotations

import re

# -- The marker our own agent replies put above the quoted customer message ------------------
# The stripper treats it as a hard boundary in any language, so a customer who answers above
# it is cut cleanly even when their client quotes without ">" (Outlook, many webmails).
REPLY_MARKER = "-- Reply above this line --"
REPLY_MARKERS: dict[str, str] = {
    "en": REPLY_MARKER,
    "da": "-- Svar over denne linje --",
    "de": "-- Bitte oberhalb dieser Zeile antworten --",
    "fr": "-- Répondez au-dessus de cette ligne --",
    "es": "-- Responda por encima de esta línea --",
    "nl": "-- Antwoord boven deze regel --",
    "sv": "-- Svara ovanför denna rad --",
    "no": "-- Svar over denne linjen --",
    "fi": "-- Vastaa tämän rivin yläpuolelle --",
    "pl": "-- Odpowiedz powyżej tej linii --",
    "it": "-- Rispondi sopra questa riga --",
    "pt": "-- Responda acima desta linha --",
    "ja": "-- この行より上に返信してください --",
    "zh": "-- 请在此行上方回复 --",
}


def reply_marker(language: str | None = None) -> str:
    """The marker line for `language` (ISO 639-1), English when unknown."""
    return REPLY_MARKERS.get((language or "en").lower()[:2], REPLY_MARKER)


_MARKER_NOISE = re.compile(r"[\s\-–—_=#>*]+")


def _norm_marker(line: str) -> str:
    return _MARKER_NOISE.sub(" ", line).strip().casefold()


# Compared loosely (dashes, spaces and case ignored) so a client that re-wraps or re-dashes
# the line, or quotes it with ">", still matches.
MARKER_KEYS = frozenset(_norm_marker(m) for m in REPLY_MARKERS.values())


# The first three characters of every key. A line whose first three characters are no noise
# opens its key with them case-folded (case folding maps each character on its own, to one
# or more), so most lines are refused without being normalised.
_MARKER_HEADS = frozenset(key[:3] for key in MARKER_KEYS)


def is_reply_marker(line: str) -> bool:
    head = line[:3]
    if not _MARKER_NOISE.search(head) and head.casefold()[:3] not in _MARKER_HEADS:
        return False
    key = _norm_marker(line)
    return bool(key) and key in MARKER_KEYS


# -- "On <date>, <name> wrote:" ----------------------------------------------------------------
# The verb (or its stand-in) of the attribution line, in each language. Gmail ja writes no verb
# at all ("2024年1月15日(月) 10:00 田中太郎 <taro@example.com>:"); that form is caught by the
# date + address rule in quotes.py.
_WROTE = [
    r"wrote",
    r"writes",
    r"sent",
    r"said",  # en
    r"schrieb",
    r"geschrieben",  # de
    r"a\s+[ée]crit",
    r"[ée]crit",  # fr
    r"escribi[óo]",
    r"escribe",  # es
    r"escreveu",
    r"escreve",  # pt
    r"ha\s+scritto",
    r"scrisse",  # it
    r"schreef",
    r"geschreven",  # nl
    r"skrev",
    r"skriver",  # da, sv, no
    r"kirjoitti",  # fi
    r"napisa[łl]\s*\(a\)",
    r"napisa[łl]a?",
    r"pisze",
    r"nades[łl]a[łl]",  # pl
    r"写道",
    r"寫道",
    r"のメール",
    r"のメッセージ",
    r"さんは書きました",
    r"は書きました",
    r"書きました",  # zh, ja
    r"napsal\s*\(a\)",
    r"napsal",  # cs (shares clients with pl)
    r"написал\s*\(а\)",
    r"написал",  # ru
]
WROTE_RE = re.compile(r"(?:" + "|".join(_WROTE) + r")[^:：]{0,80}[:：]\s*$", re.IGNORECASE)

# Words that open an attribution line ("On", "Am", "Le", …), used to accept a line that names
# neither an address nor a date ("On Monday, Anna wrote:").
INTRO_OPENER_RE = re.compile(
    r"^(?:on|am|le|el|em|il|op|den|d\.|w\s+dniu|dnia|às|as|in\s+data|在|於|于)\b", re.IGNORECASE
)

EMAIL_RE = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
DIGIT_RE = re.compile(r"\d")

# -- Outlook-style header blocks -----------------------------------------------------------------
# field name -> role. A block is a "from" line plus at least one other role within a few lines.
_FIELDS: dict[str, tuple[str, ...]] = {
    "from": (
        "from", "von", "de", "fra", "från", "van", "od", "da", "lähettäjä", "mittente",
        "remitente", "afzender", "expéditeur", "envoyé par", "发件人", "發件人", "寄件者",
        "差出人", "送信者", "od kogo", "от", "от кого",
    ),
    "date": (
        "sent", "date", "gesendet", "datum", "envoyé", "enviado", "enviada em", "enviado em",
        "fecha", "sendt", "skickat", "verzonden", "wysłano", "wysłane", "data", "inviato",
        "lähetetty", "päivämäärä", "发送时间", "日期", "寄件日期", "送信日時", "日付", "时间",
        "enviado el", "dato", "tid", "gesendet am", "sent at", "received", "отправлено", "дата",
    ),
    "to": (
        "to", "an", "à", "a", "para", "til", "till", "aan", "do", "vastaanottaja", "destinatario",
        "收件人", "收件者", "宛先", "pour", "destinataire", "per", "adressat", "кому",
    ),
    "subject": (
        "subject", "betreff", "objet", "asunto", "assunto", "oggetto", "emne", "ämne", "onderwerp",
        "temat", "aihe", "主题", "主旨", "件名", "sujet", "tema", "otsikko", "тема",
    ),
    "cc": ("cc", "kopie", "kopia", "kopio", "dw", "抄送", "副本", "copie", "bcc", "cco", "kopi"),
}  # fmt: skip
FIELD_ROLE: dict[str, str] = {name: role for role, names in _FIELDS.items() for name in names}
_FIELD_NAMES = sorted(FIELD_ROLE, key=len, reverse=True)
# "*From:* x", "From: x", "De : x" (French spacing), "发件人：x"
HEADER_FIELD_RE = re.compile(
    r"^[*_\s]*(?P<name>"
    + "|".join(re.escape(n) for n in _FIELD_NAMES)
    + r")[*_]*\s*[:：][*_]*(?P<value>.*)$",
    re.IGNORECASE,
)

# -- Separators of original and forwarded messages -------------------------------------------------
_ORIGINAL = [
    "original message", "ursprüngliche nachricht", "originalnachricht", "message d'origine",
    "message original", "mensaje original", "mensagem original", "oprindelig meddelelse",
    "originalmeddelande", "ursprungligt meddelande", "opprinnelig melding", "original melding",
    "oorspronkelijk bericht", "origineel bericht", "originele bericht", "wiadomość oryginalna",
    "oryginalna wiadomość", "messaggio originale", "alkuperäinen viesti", "原始邮件", "原始郵件",
    "元のメッセージ", "原始信息", "original meddelelse", "reply message", "mensaje de respuesta",
]  # fmt: skip
_FORWARDED = [
    "forwarded message", "forwarded e-mail", "forwarded email", "weitergeleitete nachricht",
    "weitergeleitete e-mail", "message transféré", "message réexpédié", "mensaje reenviado",
    "mensagem encaminhada", "mensagem reencaminhada", "videresendt meddelelse", "videresendt besked",
    "vidarebefordrat meddelande", "vidarebefordrat mejl", "videresendt melding", "videresendt e-post",
    "doorgestuurd bericht", "wiadomość przekazana", "przekazana wiadomość", "messaggio inoltrato",
    "välitetty viesti", "edelleenlähetetty viesti", "转发的邮件", "轉寄的郵件", "转发邮件",
    "転送されたメッセージ", "転送メッセージ", "begin forwarded message", "anfang der weitergeleiteten nachricht",
    "anfang der weitergeleiteten e-mail", "début du message réexpédié", "début du message transféré",
    "inicio del mensaje reenviado", "início da mensagem reencaminhada", "início da mensagem encaminhada",
    "start på videresendt besked", "start på videresendt meddelelse", "början på vidarebefordrat brev",
    "vidarebefordrat brev", "begynnelse på videresendt melding", "begin doorgestuurd bericht",
    "początek przekazywanej wiadomości", "inizio messaggio inoltrato", "välitetty viesti alkaa",
]  # fmt: skip
_PHRASES = "|".join(re.escape(p) for p in sorted(_ORIGINAL + _FORWARDED, key=len, reverse=True))
SEPARATOR_RE = re.compile(
    r"^[\s>]*[-=_*~─—–]{0,}\s*(?:" + _PHRASES + r")\s*[:：]?\s*[-=_*~─—–]{0,}\s*[:：]?\s*$",
    re.IGNORECASE,
)
FORWARD_RE = re.compile("|".join(re.escape(p) for p in _FORWARDED), re.IGNORECASE)
# Outlook's plain-text rule above a header block.
RULE_RE = re.compile(r"^\s*(?:_{8,}|-{8,}|─{8,})\s*$")

# -- "Sent from my iPhone" ---------------------------------------------------------------------------
_SENT_FROM = [
    r"sent from my", r"sent from", r"sent via", r"sent with", r"sent using", r"get outlook for",
    r"sent from outlook", r"sent from mail for", r"sent from yahoo mail",
    r"von meinem .{1,40} gesendet", r"gesendet von", r"gesendet mit", r"gesendet vom", r"holen sie sich outlook",
    r"envoyé de mon", r"envoyé depuis", r"envoyé avec", r"obtenir outlook pour", r"télécharger outlook",
    r"enviado desde mi", r"enviado desde", r"enviado con", r"obtener outlook para", r"descargar outlook",
    r"enviado do meu", r"enviado a partir do", r"enviado do", r"obter o outlook para", r"obtenha o outlook",
    r"inviato da", r"inviato dal mio", r"inviato con", r"scarica outlook",
    r"verzonden vanaf mijn", r"verzonden vanaf", r"verstuurd vanaf mijn", r"verstuurd vanaf",
    r"verzonden met", r"outlook voor ios downloaden", r"download outlook",
    r"sendt fra min", r"sendt fra", r"hent outlook til", r"få outlook til", r"skickat från min",
    r"skickat från", r"hämta outlook för", r"skaff outlook for",
    r"lähetetty .{1,30}(?:sta|stä)", r"lähetetty laitteesta", r"lähetetty", r"hanki outlook",
    r"wysłane z mojego", r"wysłano z mojego", r"wysłane z", r"wysłano z", r"pobierz outlook",
    r".{1,20}から送信", r"私の.{1,20}から送信", r"发自我的", r"从我的.{1,20}发送", r"來自我的", r"发自",
    r"寄件自我的",
]  # fmt: skip
SENT_FROM_RE = re.compile(r"^\s*(?:" + "|".join(_SENT_FROM) + r")", re.IGNORECASE)

# -- Sign-offs ----------------------------------------------------------------------------------------
# Closings that open a signature even with no name below them.
_REGARDS = [
    "best regards", "kind regards", "warm regards", "warmest regards", "regards", "best wishes",
    "best", "cheers", "sincerely", "yours sincerely", "sincerely yours", "yours truly", "yours",
    "all the best", "with best regards", "with kind regards", "respectfully", "cordially",
    "take care", "br", "rgds", "kr", "many regards", "greetings", "mit freundlichen grüßen",
    "mit freundlichen grüssen", "mit freundlichem gruß", "mit freundlichem gruss",
    "freundliche grüße", "freundliche grüsse", "viele grüße", "viele grüsse", "beste grüße",
    "beste grüsse", "liebe grüße", "liebe grüsse", "herzliche grüße", "schöne grüße", "gruß",
    "gruss", "grüße", "grüsse", "lg", "mfg", "vg", "bg", "cordialement", "bien cordialement",
    "bien à vous", "salutations", "sincères salutations", "meilleures salutations",
    "salutations distinguées", "amicalement", "à bientôt", "bonne journée", "bonne soirée",
    "saludos", "un saludo", "saludos cordiales", "atentamente", "cordialmente", "un abrazo",
    "abrazos", "atenciosamente", "cumprimentos", "melhores cumprimentos", "com os melhores cumprimentos",
    "abraços", "abraço", "att", "att.", "saudações", "cordiali saluti", "distinti saluti", "saluti",
    "un saluto", "buona giornata", "a presto", "met vriendelijke groet", "met vriendelijke groeten",
    "vriendelijke groet", "vriendelijke groeten", "groet", "groeten", "hartelijke groet",
    "hartelijke groeten", "mvg", "groetjes", "med venlig hilsen", "venlig hilsen", "vh", "mvh",
    "hilsen", "bedste hilsner", "de bedste hilsner", "kh", "kærlig hilsen", "venligst",
    "med vänliga hälsningar", "med vänlig hälsning", "vänliga hälsningar", "vänlig hälsning",
    "hälsningar", "bästa hälsningar", "hälsning", "med vennlig hilsen", "vennlig hilsen",
    "beste hilsen", "ystävällisin terveisin", "terveisin", "parhain terveisin", "t.",
    "hyvää päivänjatkoa", "z poważaniem", "z powazaniem", "pozdrawiam", "pozdrawiam serdecznie",
    "serdecznie pozdrawiam", "z wyrazami szacunku", "pozdrowienia", "serdeczne pozdrowienia",
    "よろしくお願いいたします", "よろしくお願いします", "よろしくお願い致します", "宜しくお願いいたします",
    "宜しくお願い致します", "以上、よろしくお願いいたします", "以上よろしくお願いいたします", "敬具",
    "以上です", "以上", "此致", "敬礼", "此致敬礼", "祝好", "顺祝商祺", "祝工作顺利", "顺颂商祺",
    "此致，敬礼",
]  # fmt: skip
# Thanks: a sign-off only when a name follows ("Thanks,\nJohn"); alone it is part of the message.
_THANKS = [
    "thanks", "thank you", "many thanks", "thanks a lot", "thanks again", "thx", "tia",
    "thanks in advance", "thank you in advance", "danke", "vielen dank", "danke schön",
    "besten dank", "herzlichen dank", "merci", "merci beaucoup", "merci d'avance", "gracias",
    "muchas gracias", "obrigado", "obrigada", "muito obrigado", "muito obrigada", "grazie",
    "grazie mille", "bedankt", "alvast bedankt", "dank je", "dank u", "hartelijk dank", "tak",
    "mange tak", "på forhånd tak", "tack", "tack så mycket", "tack på förhand", "takk",
    "tusen takk", "på forhånd takk", "kiitos", "kiittäen", "kiitos paljon", "dziękuję",
    "dzięki", "z góry dziękuję", "ありがとうございます", "谢谢", "謝謝", "多谢", "感谢",
]  # fmt: skip


def _phrase_re(phrases: list[str]) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


_TAIL = r"[\s,.;:!。、，！~-]*"
# Whole-line closing, optionally doubled ("Med venlig hilsen / Kind regards").
REGARDS_RE = re.compile(
    rf"^(?:{_phrase_re(_REGARDS)}){_TAIL}(?:/\s*(?:{_phrase_re(_REGARDS + _THANKS)}){_TAIL})?$",
    re.IGNORECASE,
)
THANKS_RE = re.compile(
    rf"^(?:{_phrase_re(_THANKS)})(?:\s*(?:&|and|und|og|och|et|y|e|en|i)\s*(?:{_phrase_re(_REGARDS)}))?{_TAIL}$",
    re.IGNORECASE,
)
# "Thanks, John" / "Cheers, Anna" / "Best, Tom M." on one line.
SIGNOFF_WITH_NAME_RE = re.compile(
    rf"^(?:{_phrase_re(_REGARDS + _THANKS)})\s*[,;–—-]\s*(?P<name>[A-ZÀ-ÞĄĆĘŁŃÓŚŹŻ][\w'.-]*(?:\s+[A-ZÀ-ÞĄĆĘŁŃÓŚŹŻ][\w'.-]*){{0,2}})[\s.!]*$"
)
