"""The token rules of Stanford's PTBLexer (CoreNLP 3.4.1, the version pycocoevalcap ships), as regexes.

Each rule is ``(name, pattern, trailing_context)`` in the lexer's priority order. The lexer picks, at each
position, the rule whose ``pattern + trailing_context`` matches the longest text (ties: the earlier rule), as
a JFlex scanner does; the trailing context is then given back to the input. The lexer is case-insensitive
for literal letters but not inside character classes, hence the ``(?i:...)`` groups around literals only.
The rule set is restricted to the default options pycocoevalcap runs with (PTB3 escaping,
``tokenizeNLs``, traditional rather than strict Treebank 3).
"""

from __future__ import annotations

__all__ = ["RULES"]

SGML = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*|"
    r"[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"
)
SPMDASH = r"(?i:&(?:MD|mdash|ndash);)|[\u0096\u0097\u2013\u2014\u2015]"
SPAMP = r"(?i:&amp;)"
SPPUNC = r"(?i:&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);)"
SPLET = r"(?i:&[aeiouAEIOU](?:acute|grave|uml);)"
SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
NEWLINE = r"(?:\r|\r?\n|\u2028|\u2029|\u000B|\u000C|\u0085)"
SPACENL = rf"(?:{SPACE}|{NEWLINE})"
SENTEND = rf"{SPACENL}(?:{SPACENL}|\p{{Lu}}|{SGML})"
DIGIT = r"[\p{Nd}\u07C0-\u07C9]"
ULETTER = r"\p{L}"  # JFlex [:letter:]
ULD = r"[\p{L}\p{Nd}]"  # [:letter:]|[:digit:]
DATE = rf"{DIGIT}{{1,2}}[\-/]{DIGIT}{{1,2}}[\-/]{DIGIT}{{2,4}}"
NUM = rf"(?:{DIGIT}+|{DIGIT}*(?:[.:,\u00AD\u066B\u066C]{DIGIT}+)+)"
NUMBER = rf"[\-+]?{NUM}"
SUBSUPNUM = r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"
FRAC = rf"(?:{DIGIT}{{1,4}}[\- \u00A0])?{DIGIT}{{1,4}}(?:\\?/|\u2044){DIGIT}{{1,4}}"
FRAC2 = r"[\u00BC\u00BD\u00BE\u2153-\u215E]"
DOLSIGN = r"(?:[A-Z]*\$|#)"
DOLSIGN2 = r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]"
LETTER = (
    rf"(?:\p{{L}}|{SPLET}|[\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F"
    r"\u0370-\u037D\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525"
    r"\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E"
    r"\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA"
    r"\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8"
    r"\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82"
    r"\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A"
    r"\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD])"
)
WORD = rf"{LETTER}(?:{LETTER}|{DIGIT})*(?:[.!?]{LETTER}(?:{LETTER}|{DIGIT})*)*"
FILENAME_EXT = (
    r"(?i:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|"
    r"ppt|ps|py|sql|tar|txt|wav|x|xml|zip)"
)
FILENAME = rf"(?:{LETTER}|{DIGIT})+(?:[.](?:{LETTER}|{DIGIT})+)*(?:[.]{FILENAME_EXT})"
APOS = r"(?:['\u0092\u2019]|(?i:&apos;))"
APOSETCETERA = rf"(?:{APOS}|[`\u0091\u2018\u201B])"
HYPHEN = r"[\-_\u058A\u2010\u2011]"
THING = rf"(?:[dDoOlL]{APOSETCETERA}{ULD})?{ULD}+(?:{HYPHEN}(?:[dDoOlL]{APOSETCETERA}{ULD})?{ULD}+)*"
THINGA = rf"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+"
THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
ACRO_SPECIAL = r"(?i:(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))"
ACRO = rf"(?:[A-Za-z](?:\.[A-Za-z])*|{ACRO_SPECIAL})"
ACRO2 = rf"(?:[A-Za-z](?:\.[A-Za-z])+|{ACRO_SPECIAL})"
HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{ACRO2}\.))+"
REDAUX = rf"{APOS}(?:[msdMSD]|(?i:re|ve|ll))"
SWORD = r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"
SREDAUX = rf"(?i:n){APOSETCETERA}(?i:t)"
APOWORD = (
    rf"(?:{APOS}(?i:n){APOS}?|[lLdDjJ]{APOS}|(?i:Dunkin){APOS}|(?i:somethin){APOS}|(?i:ol){APOS}|{APOS}(?i:em)|"
    rf"[A-HJ-XZn]{APOSETCETERA}{ULETTER}{{2}}{ULETTER}*|{APOS}[2-9]0(?i:s)|{APOS}(?i:till?)|"
    rf"{ULETTER}{ULETTER}*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z]{ULETTER}*|{APOS}(?i:cause)|(?i:cont'd)\.?|"
    rf"(?i:'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|(?i:O){APOSETCETERA}(?i:o))"
)
APOWORD2 = rf"(?i:y){APOS}"
FULLURL = r"(?i:https?://)[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},\-]"
LIKELYURL = (
    r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
    r"(?i:com|net|org|edu)))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-])?"
)
EMAIL = (
    r"(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
    r"(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+)(?:(?i:&gt;)|>)?"
)
TWITTER = rf"(?:@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+)"
ABMONTH = r"(?i:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)"
ABDAYS = r"(?i:Mon|Tue|Tues|Wed|Thu|Thurs|Fri)"
ABSTATE = (
    r"(?:(?i:Ala|Ariz)|A(?i:z)|A(?i:rk)|(?i:Calif|Colo|Conn|Ct|Dak)|D(?i:el)|(?i:Fla|Ga)|I(?i:ll)|"
    r"(?i:Ind|Kans?|Ky)|L(?i:a)|M(?i:ass)|(?i:Md|Mich|Minn)|M(?i:iss)|(?i:Mo|Mont|Neb|Nev|Okla)|O(?i:re)|"
    r"P(?i:a)|(?i:Penn|Tenn)|T(?i:ex)|(?i:Va|Vt)|W(?i:ash)|(?i:Wisc?|Wyo))"
)
ABCOMP = r"(?:(?i:Inc|Cos?|Corp)|(?i:Pp?t)[ye](?i:s)?|(?i:Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys))"
ABNUM = r"(?i:tel|est|ext|sq)"
ABPTIT = r"(?i:Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq)"
ABBREV1 = rf"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|(?i:etc|al|seq|Bldg))\."
ABTITLE = (
    r"(?:(?i:Mr|Mrs|Ms)|M(?i:iss)|(?i:Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|"
    r"Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|"
    r"Mlle|Mme|Msgr|Sfc))"
)
ABCOMP2 = r"(?:(?i:Invt|Elec|Natl)|(?i:M)[ft](?i:g)|(?i:Dept))"
ABBREV4 = rf"(?:{ABTITLE}|(?i:vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph)|{ACRO}|{ABCOMP2})"
ABBREV3 = r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\."
PHONE = (
    r"(?:(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])[0-9]{3,4}"
    r"[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5})"
)
LDOTS = r"(?:\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026])"
INSENTP = r"[,;:\u3001]"
QUOTES = (
    rf"(?:{APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A"
    r"\u00AB\u00BB]{1,2})"
)
DBLQUOT = r"(?:\"|(?i:&quot;))"
TBSPEC = (
    rf"(?:(?i:-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-)|(?i:S)(?:&|{SPAMP})(?i:P-500)|"
    rf"(?i:S)(?:&|{SPAMP})(?i:Ls)|(?i:Cap){APOS}(?i:n)|(?i:c){APOS}(?i:est))"
)
TBSPEC2 = rf"{APOS}[0-9][0-9]"
SMILEY = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"
ASIANSMILEY = (
    r"(?:[\^x=~<>]\.\[\^(?i:x)=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|"
    r"\([\^x=~<>']-[\^x=~<>'`]\))"
)
MISCSYMBOL = (
    "[+%&~\\^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7\u0387"
    "\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d"
    "\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023\u2030-\u2038\u203b"
    "\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb"
    "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
# words after which a sentence-final acronym is assumed ("... the U.S. The ...")
_SENT_START = (
    r"A(?i:bout)|A(?i:ccording)|A(?i:dditionally)|A(?i:fter)|A(?i:n)|A|A(?i:s)|A(?i:t)|B(?i:ut)|E(?i:arlier)|"
    r"H(?i:e)|H(?i:er)|H(?i:ere)|H(?i:owever)|I(?i:f)|I(?i:n)|I(?i:t)|L(?i:ast)|M(?i:any)|M(?i:ore)|M(?i:r)\.|"
    r"M(?i:s)\.|N(?i:ow)|O(?i:nce)|O(?i:ne)|O(?i:ther)|O(?i:ur)|S(?i:he)|S(?i:ince)|S(?i:o)|S(?i:ome)|"
    r"S(?i:uch)|T(?i:hat)|T(?i:he)|T(?i:heir)|T(?i:hen)|T(?i:here)|T(?i:hese)|T(?i:hey)|T(?i:his)|W(?i:e)|"
    r"W(?i:hen)|W(?i:hile)|W(?i:hat)|Y(?i:et)|Y(?i:ou)"
)

# (action, pattern, trailing context); actions are interpreted by :mod:`.ptb_tokenizer`
RULES: list[tuple[str, str, str | None]] = [
    ("get", r"(?i:c)\+\+", None),
    ("get", r"(?i:c|f)#", None),
    ("push3", r"(?i:cannot)", None),
    ("push3", r"(?i:'twas)", None),
    ("push2", r"(?i:'tis)", None),
    ("push2", r"(?i:gonna|gotta|lemme|gimme|wanna)", None),
    ("sgml", SGML, None),
    ("mdash", SPMDASH, None),
    ("amp", SPAMP, None),
    ("get", SPPUNC, None),
    ("soft", WORD, REDAUX),
    ("soft", SWORD, SREDAUX),
    ("soft", WORD, None),
    ("get", APOWORD, None),
    ("get", APOWORD2, ULETTER),
    ("get", FULLURL, None),
    ("get", LIKELYURL, None),
    ("get", EMAIL, None),
    ("get", TWITTER, None),
    ("quote_right", REDAUX, r"[^A-Za-z]"),
    ("quote_right", SREDAUX, r"[^A-Za-z]"),
    ("get", DATE, None),
    ("soft", NUMBER, None),
    ("get", SUBSUPNUM, None),
    ("nbsp", FRAC, None),
    ("fraction", FRAC2, None),
    ("amp", TBSPEC, None),
    ("get", THING3, None),
    ("get", DOLSIGN, None),
    ("currency", DOLSIGN2, None),
    ("acronym", rf"{ACRO}\.", rf"{SPACENL}+(?:{_SENT_START}|{SGML}){SPACENL}"),
    ("trim", ABBREV3, rf"{SPACENL}?\p{{Nd}}"),
    ("get", r"(?:(?i:pt)[eyEY]|(?i:co))\.", rf"{SPACE}(?i:ltd|lim)"),
    ("redup", ABBREV1, SENTEND),
    ("get", ABBREV1, r"(?s:..)"),
    ("redup", ABBREV1, None),
    ("get", rf"{ABBREV4}\.", None),
    ("get", ABBREV4, SPACE),
    ("get", ACRO, SPACENL),
    ("get", TBSPEC2, SPACENL),
    ("get", FILENAME, rf"(?:{SPACENL}|[.?!,])"),
    ("soft", rf"{WORD}\.", INSENTP),
    ("phone", PHONE, None),
    ("quote_left", DBLQUOT, r"[A-Za-z0-9$]"),
    ("quote_right", DBLQUOT, None),
    ("skip", r"\x7f", None),
    ("lt", r"<|(?i:&lt;)", None),
    ("gt", r">|(?i:&gt;)", None),
    ("parens", SMILEY, r"[^A-Za-z0-9]"),
    ("parens", ASIANSMILEY, None),
    ("-LCB-", r"\{", None),
    ("-RCB-", r"\}", None),
    ("-LSB-", r"\[", None),
    ("-RSB-", r"\]", None),
    ("-LRB-", r"\(", None),
    ("-RRB-", r"\)", None),
    ("hyphens", r"-+", None),
    ("ellipsis", LDOTS, None),
    ("get", r"@+|#+|_+", None),
    ("get", r"\*+|(?:\\\*){1,3}", None),
    ("get", INSENTP, None),
    ("get", r"[?!]+", None),
    ("get", r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None),
    ("get", r"=", None),
    ("get", r"/", None),
    ("soft", rf"{HTHING}\.", INSENTP),
    ("soft", HTHING, None),
    ("get", rf"{THING}\.", INSENTP),
    ("get", THING, None),
    ("amp", rf"{THINGA}\.", INSENTP),
    ("amp", THINGA, None),
    ("quote_left", r"'", r"[A-Za-z][^ \t\n\r\u00A0]"),
    ("quote_right", REDAUX, None),
    ("quote_right", SREDAUX, None),
    ("quote_right", QUOTES, None),
    ("get", r"<<|>>", None),
    ("get", MISCSYMBOL, None),
    ("skip", rf"\x00|{SPACE}+|[\u200B\u200E\u200F\uFEFF]", None),
    ("newline", NEWLINE, None),
    ("skip", r"(?i:&nbsp;)", None),
    ("skip", r".", None),  # untokenizable: deleted (pycocoevalcap runs the default untokenizable=firstDelete)
]
