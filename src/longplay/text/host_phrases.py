"""A podcast host's stock phrases, written by hand in the languages teams ask for most.

The script writer (``engines/scripts.py``) adds a few phrases of its own: the intro and
outro, lead-ins ("Right."), follow-ups ("Go on."), "From <document>:", the questions
made from headings and the words that list the documents. Translated one at a time and
out of context, a small model turns "Right." into German "Rechts." (the direction) and
"Go on." into French "Et si ?", answers that pass any check of form. So the phrases are
written here once, in a natural spoken register, and the model translates them only
into the languages not listed.

Each phrase is keyed by the writer's English, placeholders included (``{documents}``,
``{topic}``, ``{guest}`` …): the writer fills them with names, so a translation has
exactly the placeholders of its English. ``", "`` is the comma between listed names.
"""

# ruff: noqa: RUF001 (Cyrillic letters that look Latin, Chinese and Japanese punctuation)
from __future__ import annotations

from longplay.text.languages import Language

TRANSLATIONS: dict[str, dict[str, str]] = {
    "Welcome to the show.": {
        "de": "Willkommen zur Sendung.",
        "fr": "Bienvenue dans l'émission.",
        "es": "Bienvenidos al programa.",
        "it": "Benvenuti alla puntata.",
        "pt": "Bem-vindos ao programa.",
        "nl": "Welkom bij de show.",
        "ru": "Добро пожаловать в наш подкаст.",
        "ja": "番組へようこそ。",
        "zh": "欢迎收听本期节目。",
    },
    "Today we're talking about {topic}, from {documents}.": {
        "de": "Heute geht es um {topic}, anhand von {documents}.",
        "fr": "Aujourd'hui, on parle de {topic}, d'après {documents}.",
        "es": "Hoy hablamos de {topic}, a partir de {documents}.",
        "it": "Oggi parliamo di {topic}, a partire da {documents}.",
        "pt": "Hoje vamos falar de {topic}, com base em {documents}.",
        "nl": "Vandaag hebben we het over {topic}, aan de hand van {documents}.",
        "ru": "Сегодня говорим на тему «{topic}», по материалам: {documents}.",
        "ja": "今日は{documents}をもとに、{topic}についてお話しします。",
        "zh": "今天我们根据{documents}，来聊聊{topic}。",
    },
    "Today we're talking about what our sources say, from {documents}.": {
        "de": "Heute schauen wir uns an, was unsere Quellen sagen, anhand von {documents}.",
        "fr": "Aujourd'hui, on regarde ce que disent nos sources, d'après {documents}.",
        "es": "Hoy vemos qué dicen nuestras fuentes, a partir de {documents}.",
        "it": "Oggi vediamo cosa dicono le nostre fonti, a partire da {documents}.",
        "pt": "Hoje vamos ver o que dizem as nossas fontes, com base em {documents}.",
        "nl": "Vandaag kijken we wat onze bronnen zeggen, aan de hand van {documents}.",
        "ru": "Сегодня разбираем, что говорят наши источники, по материалам: {documents}.",
        "ja": "今日は{documents}をもとに、資料に書かれていることをご紹介します。",
        "zh": "今天我们根据{documents}，来看看资料里都说了些什么。",
    },
    "With me is {guests}.": {
        "de": "Bei mir ist {guests}.",
        "fr": "Avec moi, {guests}.",
        "es": "Me acompaña {guests}.",
        "it": "Con me c'è {guests}.",
        "pt": "Comigo está {guests}.",
        "nl": "Bij mij aan tafel zit {guests}.",
        "ru": "Со мной в студии {guests}.",
        "ja": "ゲストは{guests}です。",
        "zh": "和我一起的是{guests}。",
    },
    "With me are {guests}.": {
        "de": "Bei mir sind {guests}.",
        "fr": "Avec moi, {guests}.",
        "es": "Me acompañan {guests}.",
        "it": "Con me ci sono {guests}.",
        "pt": "Comigo estão {guests}.",
        "nl": "Bij mij aan tafel zitten {guests}.",
        "ru": "Со мной в студии {guests}.",
        "ja": "ゲストは{guests}です。",
        "zh": "和我一起的是{guests}。",
    },
    "Thanks.": {
        "de": "Danke.",
        "fr": "Merci.",
        "es": "Gracias.",
        "it": "Grazie.",
        "pt": "Obrigado.",
        "nl": "Dank je.",
        "ru": "Спасибо.",
        "ja": "ありがとうございます。",
        "zh": "谢谢。",
    },
    "Let's get into {topic}.": {
        "de": "Steigen wir gleich ein: {topic}.",
        "fr": "Entrons dans le vif du sujet : {topic}.",
        "es": "Entremos en materia: {topic}.",
        "it": "Entriamo nel vivo: {topic}.",
        "pt": "Vamos direto ao assunto: {topic}.",
        "nl": "Laten we er meteen in duiken: {topic}.",
        "ru": "Давайте перейдём к теме «{topic}».",
        "ja": "さっそく{topic}について見ていきましょう。",
        "zh": "那我们就来聊聊{topic}吧。",
    },
    "Let's get into what our sources say.": {
        "de": "Schauen wir uns gleich an, was unsere Quellen sagen.",
        "fr": "Voyons tout de suite ce que disent nos sources.",
        "es": "Veamos qué dicen nuestras fuentes.",
        "it": "Vediamo subito cosa dicono le nostre fonti.",
        "pt": "Vamos ver o que dizem as nossas fontes.",
        "nl": "Laten we meteen kijken wat onze bronnen zeggen.",
        "ru": "Давайте посмотрим, что говорят наши источники.",
        "ja": "さっそく資料の内容を見ていきましょう。",
        "zh": "那我们就来看看资料里是怎么说的吧。",
    },
    "Thanks, {guest}.": {
        "de": "Danke, {guest}.",
        "fr": "Merci, {guest}.",
        "es": "Gracias, {guest}.",
        "it": "Grazie, {guest}.",
        "pt": "Obrigado, {guest}.",
        "nl": "Dank je, {guest}.",
        "ru": "Спасибо, {guest}.",
        "ja": "{guest}さん、ありがとうございました。",
        "zh": "谢谢{guest}。",
    },
    "That's all for today.": {
        "de": "Das war's für heute.",
        "fr": "C'est tout pour aujourd'hui.",
        "es": "Eso es todo por hoy.",
        "it": "Per oggi è tutto.",
        "pt": "Por hoje é só.",
        "nl": "Dat was het voor vandaag.",
        "ru": "На сегодня всё.",
        "ja": "今日はここまでです。",
        "zh": "今天就到这里。",
    },
    "Thanks for listening.": {
        "de": "Danke fürs Zuhören.",
        "fr": "Merci de nous avoir écoutés.",
        "es": "Gracias por escucharnos.",
        "it": "Grazie per l'ascolto.",
        "pt": "Obrigado por nos ouvir.",
        "nl": "Bedankt voor het luisteren.",
        "ru": "Спасибо, что слушали.",
        "ja": "お聞きいただきありがとうございました。",
        "zh": "感谢收听。",
    },
    "What does {document} tell us about {heading}?": {
        "de": "Was sagt {document} zum Thema {heading}?",
        "fr": "Que nous apprend {document} sur {heading} ?",
        "es": "¿Qué nos cuenta {document} sobre {heading}?",
        "it": "Cosa ci dice {document} su {heading}?",
        "pt": "O que {document} nos diz sobre {heading}?",
        "nl": "Wat vertelt {document} ons over {heading}?",
        "ru": "Что источник «{document}» говорит на тему «{heading}»?",
        "ja": "{document}は{heading}について何と言っていますか？",
        "zh": "关于{heading}，{document}告诉了我们什么？",
    },
    "What else does {document} tell us?": {
        "de": "Was steht sonst noch in {document}?",
        "fr": "Que nous apprend encore {document} ?",
        "es": "¿Qué más nos cuenta {document}?",
        "it": "Cos'altro ci dice {document}?",
        "pt": "O que mais {document} nos diz?",
        "nl": "Wat vertelt {document} ons nog meer?",
        "ru": "Что ещё говорит источник «{document}»?",
        "ja": "{document}には、ほかに何が書かれていますか？",
        "zh": "{document}还告诉了我们什么？",
    },
    "From {document}:": {
        "de": "Aus {document}:",
        "fr": "D'après {document} :",
        "es": "Según {document}:",
        "it": "Da {document}:",
        "pt": "Segundo {document}:",
        "nl": "Uit {document}:",
        "ru": "В источнике «{document}» говорится:",
        "ja": "{document}より：",
        "zh": "摘自{document}：",
    },
    "Right.": {
        "de": "Genau.",
        "fr": "Tout à fait.",
        "es": "Exacto.",
        "it": "Esatto.",
        "pt": "Certo.",
        "nl": "Precies.",
        "ru": "Верно.",
        "ja": "そうですね。",
        "zh": "没错。",
    },
    "Sure.": {
        "de": "Klar.",
        "fr": "Bien sûr.",
        "es": "Claro.",
        "it": "Certo.",
        "pt": "Claro.",
        "nl": "Zeker.",
        "ru": "Конечно.",
        "ja": "もちろんです。",
        "zh": "当然。",
    },
    "Well,": {
        "de": "Ja, also:",
        "fr": "Eh bien.",
        "es": "Bueno.",
        "it": "Allora.",
        "pt": "Bom.",
        "nl": "Nou.",
        "ru": "Что ж.",
        "ja": "ええと、",
        "zh": "嗯，",
    },
    "Good question.": {
        "de": "Gute Frage.",
        "fr": "Bonne question.",
        "es": "Buena pregunta.",
        "it": "Bella domanda.",
        "pt": "Boa pergunta.",
        "nl": "Goede vraag.",
        "ru": "Хороший вопрос.",
        "ja": "いい質問ですね。",
        "zh": "好问题。",
    },
    "Here's what the source says.": {
        "de": "Die Quelle sagt dazu Folgendes.",
        "fr": "Voici ce que dit la source.",
        "es": "Esto es lo que dice la fuente.",
        "it": "Ecco cosa dice la fonte.",
        "pt": "Veja o que diz a fonte.",
        "nl": "Dit zegt de bron erover.",
        "ru": "Вот что говорит источник.",
        "ja": "資料にはこう書かれています。",
        "zh": "资料里是这么说的。",
    },
    "Go on.": {
        "de": "Erzähl weiter.",
        "fr": "Vas-y, continue.",
        "es": "Sigue, sigue.",
        "it": "Vai avanti.",
        "pt": "Pode continuar.",
        "nl": "Ga door.",
        "ru": "Продолжайте.",
        "ja": "続けてください。",
        "zh": "请继续。",
    },
    "And what else?": {
        "de": "Und was noch?",
        "fr": "Et quoi d'autre ?",
        "es": "¿Y qué más?",
        "it": "E cos'altro?",
        "pt": "E o que mais?",
        "nl": "En wat nog meer?",
        "ru": "А что ещё?",
        "ja": "ほかには？",
        "zh": "还有呢？",
    },
    "Tell us more.": {
        "de": "Erzähl uns mehr.",
        "fr": "Dis-nous-en plus.",
        "es": "Cuéntanos más.",
        "it": "Raccontaci di più.",
        "pt": "Conte mais.",
        "nl": "Vertel eens meer.",
        "ru": "Расскажите подробнее.",
        "ja": "もう少し詳しく教えてください。",
        "zh": "再多讲讲吧。",
    },
    "What follows from that?": {
        "de": "Und was folgt daraus?",
        "fr": "Et qu'est-ce qui en découle ?",
        "es": "¿Y qué se deduce de eso?",
        "it": "E cosa ne consegue?",
        "pt": "E o que isso quer dizer?",
        "nl": "En wat volgt daaruit?",
        "ru": "И что из этого следует?",
        "ja": "そこから何が言えますか？",
        "zh": "这说明了什么呢？",
    },
    "But the source also says:": {
        "de": "Aber die Quelle sagt auch:",
        "fr": "Mais la source dit aussi :",
        "es": "Pero la fuente también dice:",
        "it": "Ma la fonte dice anche:",
        "pt": "Mas a fonte também diz:",
        "nl": "Maar de bron zegt ook:",
        "ru": "Но источник говорит и другое:",
        "ja": "ただ、資料にはこうも書かれています：",
        "zh": "不过资料里也提到：",
    },
    "our sources": {
        "de": "unseren Quellen",
        "fr": "nos sources",
        "es": "nuestras fuentes",
        "it": "varie fonti",
        "pt": "nossas fontes",
        "nl": "onze bronnen",
        "ru": "наши источники",
        "ja": "手元の資料",
        "zh": "手头的资料",
    },
    "{first} and {last}": {
        "de": "{first} und {last}",
        "fr": "{first} et {last}",
        "es": "{first} y {last}",
        "it": "{first} e {last}",
        "pt": "{first} e {last}",
        "nl": "{first} en {last}",
        "ru": "{first} и {last}",
        "ja": "{first}と{last}",
        "zh": "{first}和{last}",
    },
    "{first} and more": {
        "de": "{first} und weitere",
        "fr": "{first} et d'autres",
        "es": "{first} y otros",
        "it": "{first} e altri",
        "pt": "{first} e outros",
        "nl": "{first} en meer",
        "ru": "{first} и другие",
        "ja": "{first}など",
        "zh": "{first}等",
    },
    ", ": {
        "de": ", ",
        "fr": ", ",
        "es": ", ",
        "it": ", ",
        "pt": ", ",
        "nl": ", ",
        "ru": ", ",
        "ja": "、",
        "zh": "、",
    },
}
"""Each of the writer's English phrases in German, French, Spanish, Italian, Portuguese,
Dutch, Russian, Japanese and (Simplified) Chinese, by ISO 639-1 code. "our sources"
stands where the documents are named ("from {documents}"), in that slot's case; "Well,"
ends a sentence where the language writes what follows it with a capital letter."""
WRITTEN = ("de", "fr", "es", "it", "pt", "nl", "ru", "ja", "zh")
"""The languages every phrase is written in."""
OTHER_SCRIPT = frozenset({"zh-Hant"})
"""Codes whose base language is written here in another script: Traditional Chinese is
not read from the Simplified phrases (the model translates those)."""


SOURCES_HEADING = {
    "de": "Quellen", "fr": "Sources", "es": "Fuentes", "it": "Fonti", "pt": "Fontes",
    "nl": "Bronnen", "ru": "Источники", "ja": "出典", "zh": "来源",
}  # fmt: skip
"""The heading of the script page's list of sources, in the languages written here."""


def sources_heading(language: Language) -> str:
    """The script page's heading of its sources in ``language``; English for a language
    not written here."""
    if language.code in OTHER_SCRIPT:
        return "Sources"
    return SOURCES_HEADING.get(language.base, "Sources")


def host_phrases(language: Language) -> dict[str, str]:
    """The writer's phrases in ``language`` by their English; empty for a language not
    written here."""
    if language.base not in WRITTEN or language.code in OTHER_SCRIPT:
        return {}
    return {english: texts[language.base] for english, texts in TRANSLATIONS.items()}
