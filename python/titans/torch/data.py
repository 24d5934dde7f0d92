"""Training batches for the byte-level Titans model: corpus windows plus synthetic recall.

numpy only (no torch import). The data directory is built by tools/prepare_data.py (see
docs/DATA.md): train.bin (uint8 bytes < 128), train_docs.npy (int64 document offsets),
heldout_kjv.txt, heldout_fortunes.txt and manifest.json.

    corpus = Corpus("data")                      # or Corpus("data", split="heldout_kjv")
    rng = np.random.default_rng(seed)
    b = sample_batch(corpus, rng, batch=4, length=8192, recall_fraction=0.5, min_distance=512)
    x, y = b["tokens"][:, :-1], b["tokens"][:, 1:]
    recall_targets = b["answer_mask"][:, 1:]     # True where the target byte is a recall answer

The mixture, per batch:

* Number of recall sequences: batch * recall_fraction, rounded stochastically (floor, plus one
  with probability equal to the fractional part), placed in rows chosen at random. The other
  rows are plain.
* Plain sequence: length + 1 consecutive bytes of the corpus, starting at the first line start
  at or after a uniformly drawn byte offset (at the offset itself if no line start fits).
  Windows may cross document boundaries (documents are separated by a blank line).
* Recall sequence: 1 to 4 facts (uniform). Each fact has a key (an adjective-noun pair such as
  "amber-falcon", or a person's name such as "Maria Okafor", depending on the template) that is
  unique within the sequence, and a value:
    70%  a 7-digit number (1000000..9999999, as `titans niah` draws it),
    20%  a number of 4 to 9 digits (uniform length, first digit non-zero),
    10%  a word (VALUE_WORDS).
  A template accepting the value's kind is drawn by weight (TEMPLATES; the RULER needle has
  weight 4, the others 1, so it is 4/9 of the number facts, 40% of all facts). The fact is
  stated ONCE (the statement) and asked once later (the question, immediately followed by the
  answer = the value and a "."). The statements and questions are spliced (inserted, nothing
  overwritten) into a corpus window of length + 1 - (total inserted bytes) bytes, so the row
  keeps exactly length + 1 bytes. Inserts go only at boundaries of that window: the start of
  a line (the insert then ends with "\\n", i.e. it is a line of its own) or after ". ", "? ",
  "! " (the insert then ends with " ", as a sentence). Placement of each fact: a distance d is
  drawn uniformly from [min_distance, window bytes], a statement position s uniformly from
  [0, window - d]; the statement goes at the last boundary <= s, the question at the first
  boundary >= (that boundary + d) (or at the last boundary, if that is still >= min_distance
  after the statement; else at the window's end). So the gap between the end of a statement
  and the start of its question is >= min_distance bytes, and distances spread from
  min_distance up to nearly the whole sequence. Facts interleave freely (several statements
  may come before the first question). If the window would be shorter than min_distance + 1
  bytes, facts are dropped (the last first); ValueError if even one does not fit.
* answer_mask is True exactly at the bytes of the values that follow the questions (not the
  question, not the final ".", not the value inside the statement).

Everything random comes from the numpy Generator passed in: the same generator state gives the
same batch.
"""

import json
import os

import numpy as np

__all__ = ["Corpus", "sample_batch", "Template", "TEMPLATES", "ADJECTIVES", "NOUNS",
           "FIRST_NAMES", "SURNAMES", "VALUE_WORDS"]

# ---------------------------------------------------------------------------------------------
# Word lists. The first 16 adjectives and nouns are the ones `titans niah` builds its keys from
# (evals/niah.cpp), so its keys are in distribution; the rest are ours.

ADJECTIVES = (
    "gentle crimson silent hollow bright frozen ancient restless golden quiet distant bitter "
    "curious hidden swift tender amber azure bold brave calm clever cobalt cosmic crystal dusty "
    "eager emerald fancy fierce fragile gallant giant glossy graceful happy humble icy ivory "
    "jolly keen lively lofty lucky lunar marble mellow misty modest noble olive pale patient "
    "polished proud purple rapid rustic scarlet shiny silver sleepy smooth solar sturdy sunny "
    "velvet vivid wandering wild wise witty woolen young zealous").split()

NOUNS = (
    "river lantern meadow harbor falcon orchard compass glacier violin canyon ember willow "
    "beacon thicket summit tide anchor badger bison candle castle cedar cliff comet coral "
    "cricket dolphin eagle feather fjord forest fox garden geyser harp hawk heron island jaguar "
    "kettle lagoon lily marsh meteor mirror moose nebula otter owl panther pebble pine planet "
    "quarry raven reef saddle sparrow spruce squirrel tiger tulip valley walrus whale wolf").split()

FIRST_NAMES = (
    "Aaron Abigail Adrian Alice Amara Andre Anna Arjun Beatriz Benjamin Bianca Carlos Chen "
    "Chloe Daniel Diana Dmitri Elena Elias Emma Farah Felix Fiona Gabriel Grace Hannah Hassan "
    "Helen Hugo Ingrid Isaac Ivan Jamal Julia Kenji Laura Leon Lucia Malik Maria Marcus Mei "
    "Nadia Noah Olga Omar Oscar Paula Pedro Priya Rafael Rosa Samuel Sara Sofia Tariq Thomas "
    "Uma Victor Wanda Xavier Yara Yusuf Zoe").split()

SURNAMES = (
    "Abbott Adeyemi Alvarez Andersen Baker Bauer Bennett Brooks Castillo Chang Clarke Costa "
    "Dubois Duarte Eriksson Evans Fischer Fleming Garcia Gupta Hale Hansen Ito Ivanova Jensen "
    "Kaplan Kelly Kim Kowalski Larsen Lopez Martin Meyer Moreau Murphy Nakamura Novak Okafor "
    "Olsen Park Patel Perez Quinn Ramos Reyes Rossi Russo Santos Schmidt Shah Silva Sorensen "
    "Suzuki Tanaka Torres Turner Vargas Walsh Weber Novikov Yamada Young Zhang Ziegler").split()

VALUE_WORDS = (
    "apricot basil biscuit butter cabbage carrot cashew celery chestnut cinnamon clover cocoa "
    "cotton daisy denim fennel ginger granite honey indigo iris jasmine kiwi lemon lilac linen "
    "magenta mango maple melon mint mustard nectar nutmeg oatmeal onion orange oyster paprika "
    "parsley peach peanut pepper plum poppy potato pumpkin quartz radish raisin rosemary "
    "saffron sage salmon sesame spinach sugar teal thyme tomato turnip vanilla walnut wheat "
    "yogurt zinc").split()


class Template:
    """One kind of fact. `statement` and `question` are format strings with {key} and, in the
    statement, {value}; the question is the text right before the answer, and the answer is
    followed by "." in the sequence. key_kind is "key" (adjective-noun) or "name"."""

    def __init__(self, name, key_kind, value_kinds, weight, statement, question):
        self.name, self.key_kind, self.value_kinds = name, key_kind, value_kinds
        self.weight, self.statement, self.question = weight, statement, question


TEMPLATES = (
    # RULER's single-needle wording, exactly as `titans niah` asks it (docs/NIAH.md).
    Template("ruler_needle", "key", ("number",), 4,
             "One of the special magic numbers for {key} is: {value}.",
             "What is the special magic number for {key}? The special magic number for {key} is: "),
    Template("phone", "name", ("number",), 1,
             "{key}'s phone number is {value}.",
             "What is {key}'s phone number? {key}'s phone number is "),
    Template("passkey", "key", ("number", "word"), 1,
             "The passkey for {key} is {value}. Remember it.",
             "What is the passkey for {key}? The passkey for {key} is "),
    Template("account", "name", ("number",), 1,
             "The account number of {key} is {value}.",
             "What is the account number of {key}? The account number of {key} is "),
    Template("code", "key", ("number", "word"), 1,
             "The secret code for {key} is {value}.",
             "What is the secret code for {key}? The secret code for {key} is "),
    Template("room", "name", ("number",), 1,
             "{key} is staying in room {value}.",
             "Which room is {key} staying in? {key} is staying in room "),
    Template("magic_word", "key", ("word",), 1,
             "The special magic word for {key} is: {value}.",
             "What is the special magic word for {key}? The special magic word for {key} is: "),
    Template("favourite", "name", ("word",), 1,
             "{key}'s favourite word is {value}.",
             "What is {key}'s favourite word? {key}'s favourite word is "),
)

MAX_FACTS = 4
_NEWLINE, _SPACE = 10, 32


def _template_table(kind):
    chosen = [t for t in TEMPLATES if kind in t.value_kinds]
    weights = np.array([t.weight for t in chosen], dtype=np.float64)
    return chosen, weights / weights.sum()


_TEMPLATES_BY_KIND = {kind: _template_table(kind) for kind in ("number", "word")}

# ---------------------------------------------------------------------------------------------
# Corpus.


class Corpus:
    """A prepared data directory. split "train" memory-maps train.bin and loads train_docs.npy;
    "heldout_kjv" / "heldout_fortunes" memory-map those text files (document offsets from the
    manifest), so sample_batch can draw evaluation batches from held-out text too.

    Attributes: dir, split, manifest (dict), data (np.memmap uint8), doc_starts (int64),
    doc_names (list of str), doc_packages (str array: each document's package), doc_ends (int64),
    line_starts (int64, offsets just after each "\\n", and 0)."""

    FILES = {"train": "train.bin", "heldout_kjv": "heldout_kjv.txt",
             "heldout_fortunes": "heldout_fortunes.txt"}

    def __init__(self, dir, split="train"):
        if split not in self.FILES:
            raise ValueError("split must be one of %s, got %r" % (sorted(self.FILES), split))
        self.dir, self.split = dir, split
        with open(os.path.join(dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        path = os.path.join(dir, self.FILES[split])
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        sources = self.manifest["splits"][split]["sources"]
        if split == "train":
            self.doc_starts = np.load(os.path.join(dir, "train_docs.npy")).astype(np.int64)
        else:
            self.doc_starts = np.array([s["offset"] for s in sources], dtype=np.int64)
        self.doc_names = ["%s:%s" % (s["package"], s["source"]) for s in sources]
        if len(self.doc_starts) != len(sources) or len(self.data) != \
                self.manifest["splits"][split]["bytes"]:
            raise ValueError("%s does not match its manifest" % path)
        self.line_starts = np.concatenate(
            [[0], np.flatnonzero(self.data[:-1] == _NEWLINE) + 1]).astype(np.int64)
        self.doc_packages = np.array([name.split(":", 1)[0] for name in self.doc_names])
        self.doc_ends = np.append(self.doc_starts[1:], len(self.data))

    def __len__(self):
        return len(self.data)

    def document(self, i):
        """The bytes of document i (without the blank line that separates it from the next)."""
        end = self.doc_starts[i + 1] - 1 if i + 1 < len(self.doc_starts) else len(self.data)
        return np.asarray(self.data[self.doc_starts[i]:end])

    def packages(self):
        """The Debian packages the documents come from, in order of first appearance."""
        return list(dict.fromkeys(self.doc_packages))

    def window_start(self, rng, n, source_weights=None):
        """Start of an n-byte window: the first line start >= a random offset, if it fits.

        The offset is uniform over the corpus, or, with source_weights ({package: weight}, the
        packages of packages(); missing ones weigh 0), uniform over the bytes of a package drawn
        by weight. Windows may run on into the next documents either way."""
        last = len(self.data) - n
        if last < 0:
            raise ValueError("the %s corpus (%d bytes) is shorter than a %d-byte window"
                             % (self.split, len(self.data), n))
        if source_weights is None:
            u = int(rng.integers(0, last + 1))
        else:
            u = min(self._weighted_offset(rng, source_weights), last)
        i = int(np.searchsorted(self.line_starts, u))
        if i < len(self.line_starts) and self.line_starts[i] <= last:
            return int(self.line_starts[i])
        return u

    def _weighted_offset(self, rng, source_weights):
        packages = self.packages()
        unknown = set(source_weights) - set(packages)
        if unknown:
            raise ValueError("source_weights names packages not in the corpus: %s; it has %s"
                             % (sorted(unknown), packages))
        w = np.array([float(source_weights.get(p, 0.0)) for p in packages])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("source_weights must be >= 0 with a positive sum, got %r"
                             % (source_weights,))
        chosen = packages[int(rng.choice(len(w), p=w / w.sum()))]
        docs = np.flatnonzero(self.doc_packages == chosen)
        sizes = self.doc_ends[docs] - self.doc_starts[docs]
        cumulative = np.cumsum(sizes)
        u = int(rng.integers(0, int(cumulative[-1])))
        i = int(np.searchsorted(cumulative, u, side="right"))
        return int(self.doc_starts[docs[i]] + u - (cumulative[i] - sizes[i]))


# ---------------------------------------------------------------------------------------------
# Facts.


def _draw_number(rng, digits):
    first = int(rng.integers(1, 10))
    rest = rng.integers(0, 10, size=digits - 1)
    return str(first) + "".join(chr(48 + int(d)) for d in rest)


def _draw_fact(rng, used_keys):
    """One fact: dict(template, key, value, statement, question)."""
    u = rng.random()
    if u < 0.7:
        kind, value = "number", _draw_number(rng, 7)
    elif u < 0.9:
        kind, value = "number", _draw_number(rng, int(rng.integers(4, 10)))
    else:
        kind, value = "word", VALUE_WORDS[int(rng.integers(len(VALUE_WORDS)))]
    templates, probs = _TEMPLATES_BY_KIND[kind]
    t = templates[int(rng.choice(len(templates), p=probs))]
    while True:
        if t.key_kind == "key":
            key = "%s-%s" % (ADJECTIVES[int(rng.integers(len(ADJECTIVES)))],
                             NOUNS[int(rng.integers(len(NOUNS)))])
        else:
            key = "%s %s" % (FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))],
                             SURNAMES[int(rng.integers(len(SURNAMES)))])
        if key not in used_keys:
            used_keys.add(key)
            break
    return dict(template=t.name, key=key, value=value,
                statement=t.statement.format(key=key, value=value),
                question=t.question.format(key=key))


def _boundaries(src):
    """Sorted insertion points of a window: 0, after every "\\n", after ". ", "? ", "! "."""
    line = np.flatnonzero(src[:-1] == _NEWLINE) + 1
    sentence = np.flatnonzero((src[1:-1] == _SPACE) & ((src[:-2] == 46) | (src[:-2] == 63) |
                                                         (src[:-2] == 33))) + 2
    return np.union1d(np.concatenate([[0], line]), sentence).astype(np.int64)


def _recall_row(corpus, rng, row_len, min_distance, n_facts, start):
    """One recall sequence of row_len bytes whose corpus text starts at `start` (None: drawn
    by corpus.window_start): (uint8 array, answer mask, facts metadata, corpus offset of the
    text, corpus bytes used)."""
    used = set()
    facts = [_draw_fact(rng, used) for _ in range(n_facts)]

    def inserted(fs):  # statement + separator, question + answer + "." + separator
        return sum(len(f["statement"]) + len(f["question"]) + len(f["value"]) + 3 for f in fs)

    while facts and row_len - inserted(facts) < min_distance + 1:
        facts.pop()
    if not facts:
        raise ValueError("length + 1 = %d bytes cannot hold a fact with min_distance %d"
                         % (row_len, min_distance))
    n = row_len - inserted(facts)
    if start is None:
        start = corpus.window_start(rng, n)
    src = np.asarray(corpus.data[start:start + n])
    bounds = _boundaries(src)

    inserts = []  # (source position, order, fact index, "statement" | "question")
    for i, f in enumerate(facts):
        d = int(rng.integers(min_distance, n + 1))
        s = int(rng.integers(0, n - d + 1))
        s_b = int(bounds[np.searchsorted(bounds, s, side="right") - 1])
        j = int(np.searchsorted(bounds, s_b + d, side="left"))
        if j < len(bounds):
            q_b = int(bounds[j])
        elif bounds[-1] >= s_b + min_distance:
            q_b = int(bounds[-1])
        else:
            q_b = n
        inserts.append((s_b, 2 * i, i, "statement"))
        inserts.append((q_b, 2 * i + 1, i, "question"))
    inserts.sort()

    pieces, pos, cursor = [], 0, 0
    answers = []
    meta = [dict(template=f["template"], key=f["key"], value=f["value"]) for f in facts]
    for b, _, i, what in inserts:
        pieces.append(src[pos:b].tobytes())
        cursor += b - pos
        pos = b
        sep = "\n" if b == 0 or src[b - 1] == _NEWLINE else " "
        f, m = facts[i], meta[i]
        if what == "statement":
            text = f["statement"] + sep
            m["statement_start"], m["statement_end"] = cursor, cursor + len(f["statement"])
        else:
            text = f["question"] + f["value"] + "." + sep
            m["question_start"] = cursor
            m["answer_start"] = cursor + len(f["question"])
            m["answer_end"] = m["answer_start"] + len(f["value"])
            answers.append((m["answer_start"], m["answer_end"]))
        pieces.append(text.encode("ascii"))
        cursor += len(text)
    pieces.append(src[pos:].tobytes())
    row = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    assert len(row) == row_len
    mask = np.zeros(row_len, dtype=bool)
    for a, e in answers:
        mask[a:e] = True
    return row, mask, meta, start, n


def sample_batch(corpus, rng, batch, length, recall_fraction, min_distance, starts=None):
    """A training batch (the mixture is described in this module's docstring).

    Args:
      corpus: a Corpus.
      rng: np.random.Generator; the only source of randomness.
      batch, length: rows, and tokens per row minus one.
      recall_fraction: expected fraction of rows with synthetic recall facts, in [0, 1].
      min_distance: least number of bytes between the end of a fact's statement and the start
        of its question (>= 1).
      starts: None (each row's corpus text starts at corpus.window_start), or a sequence of
        `batch` corpus offsets where the rows' text starts: for streams, row r of the next
        batch starts at starts[r] + consumed[r] and continues the text (the last byte of this
        row's corpus text, a target here, is the first input there).

    Returns a dict:
      tokens       np.int64 [batch, length + 1], byte values < 128; inputs [:, :-1], targets
                   [:, 1:].
      answer_mask  bool [batch, length + 1], True at the answer bytes (the values after the
                   questions); use answer_mask[:, 1:] with the targets.
      recall       bool [batch], True for the rows with facts.
      facts        list (one per row) of lists of dicts: template, key, value,
                   statement_start, statement_end, question_start, answer_start, answer_end
                   (byte offsets in the row; ends exclusive).
      starts       np.int64 [batch], the corpus offset where each row's text starts.
      consumed     np.int64 [batch], the row's corpus bytes minus one (length for a plain row).
    """
    if batch < 1 or length < 1:
        raise ValueError("batch and length must be >= 1")
    if not 0.0 <= recall_fraction <= 1.0:
        raise ValueError("recall_fraction must be in [0, 1], got %r" % (recall_fraction,))
    if min_distance < 1:
        raise ValueError("min_distance must be >= 1, got %r" % (min_distance,))
    row_len = length + 1
    expected = batch * recall_fraction
    n_recall = int(np.floor(expected))
    if rng.random() < expected - n_recall:
        n_recall += 1
    recall = np.zeros(batch, dtype=bool)
    if n_recall:
        recall[rng.permutation(batch)[:n_recall]] = True

    tokens = np.empty((batch, row_len), dtype=np.int64)
    answer_mask = np.zeros((batch, row_len), dtype=bool)
    if starts is not None and len(starts) != batch:
        raise ValueError("starts has %d offsets for %d rows" % (len(starts), batch))
    row_starts = np.zeros(batch, dtype=np.int64)
    consumed = np.zeros(batch, dtype=np.int64)
    facts = []
    for r in range(batch):
        start = None if starts is None else int(starts[r])
        if recall[r]:
            n_facts = int(rng.integers(1, MAX_FACTS + 1))
            if start is not None:  # the facts' draws need the row's text: check it fits first
                _check_window(corpus, start, row_len)
            row, mask, meta, start, n = _recall_row(corpus, rng, row_len, min_distance,
                                                    n_facts, start)
            tokens[r] = row
            answer_mask[r] = mask
            facts.append(meta)
        else:
            if start is None:
                start = corpus.window_start(rng, row_len)
            _check_window(corpus, start, row_len)
            n = row_len
            tokens[r] = corpus.data[start:start + row_len]
            facts.append([])
        row_starts[r], consumed[r] = start, n - 1
    return dict(tokens=tokens, answer_mask=answer_mask, recall=recall, facts=facts,
                starts=row_starts, consumed=consumed)


def _check_window(corpus, start, n):
    if start < 0 or start + n > len(corpus):
        raise ValueError("a %d-byte row at offset %d runs past the %s corpus (%d bytes)"
                         % (n, start, corpus.split, len(corpus)))
