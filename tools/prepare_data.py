#!/usr/bin/python3
"""Build the byte-level training data set from Debian packages (no downloads).

Sources (Debian packages, see docs/DATA.md):
  bible-kjv-text + bible-kjv  the King James Bible, dumped with `bible -f Gen1:1-Rev22:21`
  fortunes                    /usr/share/games/fortunes/* (fortunes separated by "%" lines)
  jargon-text                 /usr/share/doc/jargon-text/jargon.txt.gz

Split, by whole documents (one document = one KJV book, one fortune file, the jargon file):
  held out  heldout_kjv.txt        the books John and Acts
            heldout_fortunes.txt   the fortune files in HELDOUT_FORTUNE_FILES
  train     train.bin              everything else, uint8 bytes, documents joined by a blank line
            train_docs.npy         int64 start offset of each document in train.bin
Fortunes that also occur (after normalisation) in a held-out fortune file are dropped from the
training fortune files, so no held-out fortune is ever trained on.

Text is normalised to printable ASCII (0x20..0x7e) plus "\n": see normalise(). Output is
deterministic (sorted file lists, no randomness): two runs give byte-identical files, listed
with their sizes and sha256 in manifest.json.

Usage: /usr/bin/python3 tools/prepare_data.py [--out data]
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata

import numpy as np

FORMAT = "titans-byte-data-v1"
FORTUNE_DIR = "/usr/share/games/fortunes"
JARGON_PATH = "/usr/share/doc/jargon-text/jargon.txt.gz"
BIBLE_RANGE = "Gen1:1-Rev22:21"
PACKAGES = ["bible-kjv", "bible-kjv-text", "fortunes", "jargon-text"]

HELDOUT_BOOKS = ["John", "Acts"]
# Moderate-size prose files (30-62 KB each), a fixed list.
HELDOUT_FORTUNE_FILES = ["education", "literature", "startrek", "wisdom"]

# The `bible` program's book abbreviations (in canonical order) and the names written out.
KJV_BOOKS = [
    ("Ge", "Genesis"), ("Exo", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"),
    ("Deu", "Deuteronomy"), ("Josh", "Joshua"), ("Jdgs", "Judges"), ("Ruth", "Ruth"),
    ("1Sm", "1 Samuel"), ("2Sm", "2 Samuel"), ("1Ki", "1 Kings"), ("2Ki", "2 Kings"),
    ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"), ("Neh", "Nehemiah"),
    ("Est", "Esther"), ("Job", "Job"), ("Psa", "Psalms"), ("Prv", "Proverbs"),
    ("Eccl", "Ecclesiastes"), ("SSol", "Song of Solomon"), ("Isa", "Isaiah"),
    ("Jer", "Jeremiah"), ("Lam", "Lamentations"), ("Eze", "Ezekiel"), ("Dan", "Daniel"),
    ("Hos", "Hosea"), ("Joel", "Joel"), ("Amos", "Amos"), ("Obad", "Obadiah"),
    ("Jonah", "Jonah"), ("Mic", "Micah"), ("Nahum", "Nahum"), ("Hab", "Habakkuk"),
    ("Zep", "Zephaniah"), ("Hag", "Haggai"), ("Zec", "Zechariah"), ("Mal", "Malachi"),
    ("Mat", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"), ("Acts", "Acts"),
    ("Rom", "Romans"), ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"),
    ("Gal", "Galatians"), ("Eph", "Ephesians"), ("Phi", "Philippians"), ("Col", "Colossians"),
    ("1Th", "1 Thessalonians"), ("2Th", "2 Thessalonians"), ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phmn", "Philemon"), ("Heb", "Hebrews"),
    ("Jas", "James"), ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1Jn", "1 John"),
    ("2Jn", "2 John"), ("3Jn", "3 John"), ("Jude", "Jude"), ("Rev", "Revelation"),
]

# ---------------------------------------------------------------------------------------------
# Normalisation to printable ASCII + newline.

# Common non-ASCII characters and their ASCII spelling. Anything else non-ASCII goes through
# Unicode NFKD decomposition, keeping its ASCII part ("é" -> "e"); if there is none, it is
# dropped. Control characters other than "\n" are dropped (tabs are expanded first, backspace
# overstrikes are resolved first).
CHAR_MAP = {
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200b": "",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2212": "-", "\u00ad": "",
    "\u2026": "...", "\u00b7": "-", "\u2022": "*", "\u2023": "*", "\u00d7": "x", "\u00f7": "/",
    "\u00b1": "+/-", "\u2192": "->", "\u2190": "<-", "\u21d2": "=>", "\u21d4": "<=>",
    "\u2194": "<->", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u223c": "~",
    "\u3008": "<", "\u3009": ">", "\u2039": "<", "\u203a": ">",
    "\u00a9": "(C)", "\u00ae": "(R)", "\u2122": "(TM)", "\u00a3": "L", "\u20ac": "EUR",
    "\u00b5": "u", "\u00b0": " deg", "\u00a7": "S.",
    "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00df": "ss",
    "\u00f8": "o", "\u00d8": "O", "\u0131": "i", "\u0142": "l", "\u0141": "L",
    "\u00f0": "d", "\u00d0": "D", "\u00fe": "th", "\u00de": "Th",
    # Box drawing (the jargon file's tables).
    "\u2500": "-", "\u2501": "-", "\u2550": "=", "\u2502": "|", "\u2503": "|", "\u2551": "|",
    "\u250c": "+", "\u2510": "+", "\u2514": "+", "\u2518": "+", "\u251c": "+", "\u2524": "+",
    "\u252c": "+", "\u2534": "+", "\u253c": "+",
}


def _is_allowed(ch):
    return ch == "\n" or " " <= ch <= "~"


def _replacement(ch):
    """The ASCII replacement of one disallowed character (possibly empty)."""
    if ch in CHAR_MAP:
        return CHAR_MAP[ch]
    if ord(ch) < 128:  # control characters (tab is expanded before this is used)
        return ""
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if _is_allowed(c))


def _resolve_backspaces(text):
    """Overstrikes like "_\\bA" or "___\\b\\b\\band": each backspace erases the character before."""
    if "\b" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        if "\b" in line:
            out = []
            for ch in line:
                if ch == "\b":
                    if out:
                        out.pop()
                else:
                    out.append(ch)
            line = "".join(out)
        lines.append(line)
    return "\n".join(lines)


def normalise(text):
    """Printable ASCII + "\\n"; trailing spaces removed, at most one blank line in a row,
    no leading/trailing blank lines; ends with exactly one "\\n" (or is empty)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _resolve_backspaces(text)
    table = {ord(ch): _replacement(ch) for ch in set(text) if ch != "\t" and not _is_allowed(ch)}
    text = text.translate(table).expandtabs(8)
    assert all(_is_allowed(ch) for ch in set(text))
    text = "\n".join(line.rstrip(" ") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n" if text else ""


# ---------------------------------------------------------------------------------------------
# Sources. Each returns a list of documents: dict(package, source, text).


def kjv_books():
    """The 66 books, one document each; one verse a line: "John 1:1 In the beginning ..."."""
    bible = shutil.which("bible")
    if bible is None:
        sys.exit("prepare_data: the `bible` program is missing (apt-get install bible-kjv)")
    # -f turns pretty-printing off: one verse a line, each with its reference ("Ge1:1 In...").
    # -p /usr/lib: the data file of bible-kjv-text, not one in the current directory.
    out = subprocess.run([bible, "-f", "-p", "/usr/lib", BIBLE_RANGE], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    names = dict(KJV_BOOKS)
    verse = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    books = {}
    order = []
    for line in out.decode("utf-8").split("\n"):
        if not line.strip():
            continue
        m = verse.match(line)
        if m is None:
            sys.exit("prepare_data: unexpected line from bible: %r" % line[:80])
        abbrev, chapter, number, body = m.groups()
        if abbrev not in names:
            sys.exit("prepare_data: unknown book abbreviation from bible: %r" % abbrev)
        if abbrev not in books:
            books[abbrev] = []
            order.append(abbrev)
        books[abbrev].append("%s %s:%s %s" % (names[abbrev], chapter, number, body.strip()))
    if order != [a for a, _ in KJV_BOOKS]:
        sys.exit("prepare_data: bible did not print the 66 books in canonical order")
    verses = sum(len(v) for v in books.values())
    if verses != 31102:
        sys.exit("prepare_data: expected 31102 verses, got %d" % verses)
    return [dict(package="bible-kjv-text", source=names[a], text=normalise("\n".join(books[a])))
            for a in order]


def _fortune_key(fortune):
    return " ".join(fortune.split())


def fortune_files():
    """One document per fortune file (sorted by name): its fortunes, normalised, separated by
    lines holding only "%" (the fortune file format)."""
    if not os.path.isdir(FORTUNE_DIR):
        sys.exit("prepare_data: %s is missing (apt-get install fortunes)" % FORTUNE_DIR)
    docs = []
    for name in sorted(os.listdir(FORTUNE_DIR)):
        path = os.path.join(FORTUNE_DIR, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="replace").replace("\ufffd", "")
        raw = raw.replace("\r\n", "\n")
        fortunes = [normalise(x) for x in re.split(r"(?m)^%[ \t]*$", raw)]
        fortunes = [x for x in fortunes if x]
        docs.append(dict(package="fortunes", source=name, fortunes=fortunes))
    missing = set(HELDOUT_FORTUNE_FILES) - {d["source"] for d in docs}
    if missing:
        sys.exit("prepare_data: held-out fortune files missing: %s" % sorted(missing))
    return docs


def jargon_file():
    if not os.path.isfile(JARGON_PATH):
        sys.exit("prepare_data: %s is missing (apt-get install jargon-text)" % JARGON_PATH)
    with gzip.open(JARGON_PATH, "rb") as f:
        raw = f.read().decode("utf-8", errors="replace").replace("\ufffd", "")
    return [dict(package="jargon-text", source="jargon.txt", text=normalise(raw))]


def package_versions():
    versions = {}
    for pkg in PACKAGES:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
            versions[pkg] = out.stdout.decode().strip()
        except (OSError, subprocess.CalledProcessError):
            versions[pkg] = None
    return versions


# ---------------------------------------------------------------------------------------------
# Output.


def join_documents(docs):
    """Documents (each ending in "\\n") joined by one extra "\\n" (a blank line between them).
    Returns the bytes and the source records with each document's offset and size."""
    parts, sources, offset = [], [], 0
    for i, d in enumerate(docs):
        data = d["text"].encode("ascii")
        if i:
            parts.append(b"\n")
            offset += 1
        record = dict(package=d["package"], source=d["source"], offset=offset, bytes=len(data))
        if "fortunes" in d:
            record["fortunes"] = len(d["fortunes"])
            if d.get("dropped_duplicates"):
                record["dropped_duplicates"] = d["dropped_duplicates"]
        sources.append(record)
        parts.append(data)
        offset += len(data)
    return b"".join(parts), sources


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data", help="output directory (default: data)")
    args = parser.parse_args(argv)
    t0 = time.time()

    books = kjv_books()
    fortunes = fortune_files()
    jargon = jargon_file()

    heldout_kjv = [b for b in books if b["source"] in HELDOUT_BOOKS]
    train_kjv = [b for b in books if b["source"] not in HELDOUT_BOOKS]
    assert [b["source"] for b in heldout_kjv] == HELDOUT_BOOKS

    heldout_f = [d for d in fortunes if d["source"] in HELDOUT_FORTUNE_FILES]
    heldout_keys = {_fortune_key(x) for d in heldout_f for x in d["fortunes"]}
    train_f = []
    for d in fortunes:
        if d["source"] in HELDOUT_FORTUNE_FILES:
            continue
        kept = [x for x in d["fortunes"] if _fortune_key(x) not in heldout_keys]
        train_f.append(dict(d, fortunes=kept, dropped_duplicates=len(d["fortunes"]) - len(kept)))
    for d in heldout_f + train_f:
        d["text"] = "%\n".join(d["fortunes"])

    splits = {
        "train": train_kjv + train_f + jargon,
        "heldout_kjv": heldout_kjv,
        "heldout_fortunes": heldout_f,
    }
    os.makedirs(args.out, exist_ok=True)
    out_files = {"train": "train.bin", "heldout_kjv": "heldout_kjv.txt",
                 "heldout_fortunes": "heldout_fortunes.txt"}
    manifest_splits = {}
    for split, docs in splits.items():
        data, sources = join_documents(docs)
        assert max(data) < 128
        with open(os.path.join(args.out, out_files[split]), "wb") as f:
            f.write(data)
        manifest_splits[split] = dict(file=out_files[split], bytes=len(data),
                                      documents=len(docs), sources=sources)
        if split == "train":
            starts = np.array([s["offset"] for s in sources], dtype=np.int64)
            np.save(os.path.join(args.out, "train_docs.npy"), starts)

    files = {}
    for name in ["train.bin", "train_docs.npy", "heldout_kjv.txt", "heldout_fortunes.txt"]:
        path = os.path.join(args.out, name)
        files[name] = dict(bytes=os.path.getsize(path), sha256=sha256_file(path))
    manifest = dict(
        format=FORMAT,
        generator="tools/prepare_data.py",
        packages=package_versions(),
        normalisation=("printable ASCII 0x20-0x7e plus newline; common Unicode punctuation "
                       "mapped to ASCII, other characters by NFKD or dropped; tabs expanded; "
                       "backspace overstrikes resolved; trailing spaces removed; at most one "
                       "blank line in a row"),
        document_separator="\\n (each document ends with a newline; one blank line between)",
        heldout=dict(kjv_books=HELDOUT_BOOKS, fortune_files=HELDOUT_FORTUNE_FILES),
        files=files,
        splits=manifest_splits,
    )
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")

    print("prepare_data: wrote %s in %.1f s" % (args.out, time.time() - t0))
    for split, info in manifest_splits.items():
        by_pkg = {}
        for s in info["sources"]:
            by_pkg[s["package"]] = by_pkg.get(s["package"], 0) + s["bytes"]
        detail = ", ".join("%s %d" % kv for kv in sorted(by_pkg.items()))
        print("  %-16s %-21s %9d bytes %4d docs (%s)"
              % (split, info["file"], info["bytes"], info["documents"], detail))
    dropped = sum(s.get("dropped_duplicates", 0) for s in manifest_splits["train"]["sources"])
    print("  held out: KJV %s; fortunes %s; %d duplicate fortunes dropped from train"
          % (", ".join(HELDOUT_BOOKS), ", ".join(HELDOUT_FORTUNE_FILES), dropped))
    print("  train.bin sha256 %s" % files["train.bin"]["sha256"])


if __name__ == "__main__":
    main()
