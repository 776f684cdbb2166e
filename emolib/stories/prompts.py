"""What the writer is asked and how its answers are read: the emotions and topics, the story and dialogue
prompts with their settings, splitting a generation into stories, and the leak filter (an emotion word
and its inflections; the neutral dialogues' sense-aware emotion-word check).

Pure text rules, no model and no files but the package's data: the corpus store (emolib.stories.corpus) and the
tiny test models (emolib.models.tiny) build on them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from ..errors import EmolibError

# rain1955's nine emotions: the `quick` setting.
QUICK_EMOTIONS = ("happy", "sad", "angry", "afraid", "calm", "desperate", "loving", "guilty", "surprised")
STORY_MARKER = "<NEW STORY>"
# The method means activations from the 50th token on (index 50, counting <bos> as 0): an analysed model
# needs at least MIN_TOKENS of a text's tokens, and skips (and counts) a kept text its tokenizer leaves shorter.
TOKEN_START = 50
MIN_TOKENS = TOKEN_START + 1
# The keep rule's length, decided when a story is written and stored with it, in words (whitespace-separated
# runs), not in any model's tokens: every analysed model then reads the same selection of one corpus. A
# tokenizer that gives each word at least one token (every one that splits on spaces) sees >= 64 tokens
# in a kept text, so the mean covers >= 14 positions.
MIN_WORDS = 64
# A neutral dialogue is "emotional" when it uses more than this many distinct emotion words: small
# writers say "sorry for any confusion" or "keep it safe" in plainly factual answers.
MAX_EMOTION_WORDS = 2


@lru_cache(maxsize=None)
def _data_text(name: str) -> str:
    return resources.files("emolib").joinpath("data", name).read_text()


def load_emotions() -> list[str]:
    """Anthropic's 171 emotion words (alphabetical)."""
    return list(json.loads(_data_text("emotions_171.json")))


def load_topics() -> list[str]:
    """Anthropic's 100 story topics, in the paper's order."""
    return list(json.loads(_data_text("topics_100.json")))


# Steered or reported by the function chapters beyond the 45 Russell-Mehrabian words (blackmail, sycophancy,
# the paper's preference headline): with those words, the emotions the deep story set deepens (issue 37).
STEERED_EMOTIONS = ("desperate", "calm", "afraid", "loving", "blissful")


def deep_emotions() -> list[str]:
    """The deep set: Anthropic's like-for-like 45 Russell-Mehrabian words, then the steered emotions not among them."""
    rated = [line.split(",")[0] for line in _data_text("human_norms_russell_mehrabian_1977.csv").splitlines()[1:] if line]
    return list(dict.fromkeys(rated + list(STEERED_EMOTIONS)))


def select_emotions(spec: str | Iterable[str]) -> list[str]:
    """'all' (171), 'quick' (rain1955's 9), 'deep' (the deep set's 50), or a list of words from the 171."""
    known = load_emotions()
    if spec == "all":
        return known
    if spec == "quick":
        return list(QUICK_EMOTIONS)
    if spec == "deep":
        return deep_emotions()
    if isinstance(spec, str):
        spec = [word.strip() for word in spec.split(",")]
    chosen = list(dict.fromkeys(spec))
    for word in chosen:
        if word not in known:
            close = difflib.get_close_matches(str(word), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EmolibError(f"emotion {word!r} is not one of the 171 emotion words (emolib/data/emotions_171.json){hint}")
    if not chosen:
        raise EmolibError("no emotions selected; use 'all', 'quick', 'deep' or a list of emotion words")
    return chosen


def select_topics(n_topics: int, seed: int = 0) -> list[tuple[int, str]]:
    """The first `n_topics` of a seeded shuffle of the 100 topics, as (index, text).

    A prefix of one fixed permutation, so a larger run contains every topic of a smaller one.
    """
    topics = load_topics()
    if not isinstance(n_topics, int) or not 1 <= n_topics <= len(topics):
        raise EmolibError(f"n_topics must be an integer in 1..{len(topics)}, got {n_topics!r}")
    order = sorted(range(len(topics)), key=lambda i: _stable_int(f"topic-order/{seed}/{i}"))
    return [(i, topics[i]) for i in order[:n_topics]]


def _stable_int(text: str) -> int:
    """A seed that depends only on `text` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------------
# Prompts

# Fixed instructions first, the topic and emotion last: every prompt of a batch then shares a long
# token prefix, which the local writer computes once (and the emotion is fresh when writing starts).
STORY_PROMPT = (
    "Write {what}. In {each} story a character feels the emotion named below. Never write that emotion word "
    "or a direct synonym of it: show the feeling only through what the character does, their body "
    "sensations and body language, what they say and how, what they think, and the situation. {form}\n\n"
    "Topic: {topic}\nEmotion: {emotion}"
)
# Wordings compared in benchmarks/prompts.py (chosen by story fidelity and leak rate, never by the analysed
# model). "label" is the original: the emotion reaches the writer only as a trailing label. The others
# put it inside the instruction sentence, still after the fixed rules, so the shared prefix stays long.
STORY_PROMPT_FEELS = (
    "Write {what} of about 120 words on the topic below. {form} Show the feeling only through what the "
    "character does, their body sensations and body language, what they say and how, what they think, and the "
    "situation.\n\nTopic: {topic}\nWrite about a character who feels {emotion}. Never write the word \"{emotion}\" or a direct "
    "synonym of it."
)
STORY_PROMPT_STRONG = (
    "Write {what} of about 120 words on the topic below. {form} Show the feeling only through what the "
    "character does, their body sensations and body language, what they say and how, what they think, and the "
    "situation.\n\nTopic: {topic}\nThe main character feels {emotion}, strongly, from the first sentence to the last: everything "
    "they do, say and notice shows it. Never write the word \"{emotion}\" or a direct synonym of it."
)
STORY_PROMPTS = {"label": STORY_PROMPT, "feels": STORY_PROMPT_FEELS, "strong": STORY_PROMPT_STRONG}
STORY_FORM_ONE = "The story is one paragraph."


def story_prompt(name: str) -> str:
    """A story wording by name (see STORY_PROMPTS)."""
    if name not in STORY_PROMPTS:
        raise EmolibError(f"unknown story prompt {name!r}; choose one of: {', '.join(STORY_PROMPTS)}")
    return STORY_PROMPTS[name]
STORY_FORM_MANY = ("Each story is one paragraph and starts fresh, with new characters. Mix first- and third-person "
                   "narration and vary the wording. Put the line {marker} before each story.")
# Neutral dialogues are built turn by turn: the writer drafts the person's message from these
# instructions, then answers it as a plain factual assistant (what an instruct model does best).
PERSON_FIRST_PROMPT = (
    "Write a question that a person asks an AI assistant. The question is practical and factual, about a "
    "task or information, not about feelings.\nExamples:\n- How do I transfer photos from my phone to my laptop?\n"
    "- What documents do I need to rent an apartment?\n- How long should I boil an egg for a firm yolk?\n\n"
    "Write only the question.\nTopic: {topic}"
)
PERSON_NEXT_PROMPT = (
    "Write the next message of the person in a conversation with an AI assistant: one short, practical "
    "follow-up question about a detail of the answer, with no feelings.\nExamples:\n"
    "- How long does that usually take?\n- What do I need to buy for the second step?\n"
    "- Is there a cheaper way to do it?\n\nWrite only the question.\n\nThe latest exchange:\n{transcript}"
)
# With a local writer, a dialogue is one continuous chat: the writer writes the person's messages in
# the user role and its answers in the assistant role, and emolib inserts the chat template's role
# markers at each turn's end (ChatScript). The topic is given in the system prompt.
DIALOGUE_TOPIC = " The user asks practical questions about this topic: {topic}."
NEUTRAL_SYSTEM = ("You are a factual assistant. Answer in plain, neutral language: facts and practical steps only. "
                  "No feelings, no exclamation marks, no emojis.")


@dataclass(frozen=True)
class CorpusSettings:
    """Everything that decides what a job's text looks like; a store must match it to be extended."""

    writer: str
    stories_per_prompt: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_new_tokens: int = 256
    dialogue_temperature: float = 0.3
    person_tokens: int = 50
    ai_tokens: int = 100
    story_prompt: str = STORY_PROMPT
    person_first_prompt: str = PERSON_FIRST_PROMPT
    person_next_prompt: str = PERSON_NEXT_PROMPT
    neutral_system: str = NEUTRAL_SYSTEM
    dialogue_topic: str = DIALOGUE_TOPIC
    # The local writer penalises repeats of generated tokens only (not of the prompt's words).
    repetition_scope: str = "generated"

    STORY_FIELDS = ("writer", "stories_per_prompt", "temperature", "top_p", "repetition_penalty", "max_new_tokens",
                    "story_prompt", "repetition_scope")
    NEUTRAL_FIELDS = ("writer", "dialogue_temperature", "top_p", "repetition_penalty", "person_tokens", "ai_tokens",
                      "person_first_prompt", "person_next_prompt", "neutral_system", "dialogue_topic",
                      "repetition_scope")

    def for_kind(self, kind: str) -> dict[str, Any]:
        """The settings that decide the text of one kind of record ("story" or "neutral")."""
        fields = self.STORY_FIELDS if kind == "story" else self.NEUTRAL_FIELDS
        return {name: getattr(self, name) for name in fields}

    def story_messages(self, emotion: str, topic: str) -> list[dict]:
        """The story request; with several stories, the answer is pre-filled with the first marker."""
        n = self.stories_per_prompt
        if n == 1:
            text = self.story_prompt.format(what="a short story", each="the", form=STORY_FORM_ONE,
                                            topic=topic.rstrip("."), emotion=emotion)
            return [{"role": "user", "content": text}]
        text = self.story_prompt.format(what=f"{n} different short stories", each="each",
                                        form=STORY_FORM_MANY.format(marker=STORY_MARKER),
                                        topic=topic.rstrip("."), emotion=emotion)
        return [{"role": "user", "content": text}, {"role": "assistant", "content": STORY_MARKER + "\n"}]

    def person_messages(self, topic: str, turns: list[tuple[str, str]]) -> list[dict]:
        """Ask the writer for the person's next message, given the dialogue so far."""
        if not turns:
            return [{"role": "user", "content": self.person_first_prompt.format(topic=topic.rstrip("."))}]
        # the latest exchange is what a follow-up asks about, and keeps the prompt short
        return [{"role": "user", "content": self.person_next_prompt.format(transcript=format_dialogue(turns[-2:]))}]

    def dialogue_system(self, topic: str) -> str:
        return self.neutral_system + self.dialogue_topic.format(topic=topic.rstrip("."))

    def ai_messages(self, turns: list[tuple[str, str]], topic: str = "") -> list[dict]:
        """The dialogue so far as a real chat, so the writer answers as a factual assistant."""
        chat = [{"role": "user" if speaker == "Person" else "assistant", "content": said} for speaker, said in turns]
        system = self.dialogue_system(topic) if topic else self.neutral_system
        return [{"role": "system", "content": system}, *chat]


# ---------------------------------------------------------------------------------------------------
# Parsing the writer's output

_MARKER_INLINE = re.compile(r"<\s*new[ _-]*story\s*>", re.IGNORECASE)
_HEADING = re.compile(
    r"^[\s*#_>|-]*(?:(?:new[ _-]*story|story|tale)\s*(?:#?\d+|one|two|three|four|five)?\b[^\n]{0,60}|title\s*:[^\n]*)$",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(?:\*\*)?\(?\d{1,2}[.)]\s+(?:\*\*)?(.*)$")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)]*(?=\s|$)")


def split_stories(text: str, finished: bool = True) -> list[str]:
    """Split one generation into stories on the marker (and the headings or numbered items that small
    writers use instead).

    A generation cut off by the token limit loses its unfinished last sentence.
    """
    text = _MARKER_INLINE.sub("\n<NEW STORY>\n", text)
    pieces: list[list[str]] = [[]]
    for line in text.splitlines():
        stripped = line.strip()
        numbered = _NUMBERED.match(stripped)
        if stripped == "<NEW STORY>" or (_HEADING.match(stripped) and len(stripped.split()) <= 8):
            pieces.append([])
        elif numbered and len(numbered.group(1).split()) >= 8:  # "1. Once upon a time ..." items
            pieces.append([numbered.group(1)])
        else:
            pieces[-1].append(line)
    stories = [re.sub(r"\n{3,}", "\n\n", "\n".join(piece)).strip() for piece in pieces]
    stories = [story for story in stories if story]
    if stories and not finished:
        ends = list(_SENTENCE_END.finditer(stories[-1]))
        stories[-1] = stories[-1][: ends[-1].end()].strip() if ends else ""
        stories = [story for story in stories if story]
    return stories


_LABEL = re.compile(r"^\s*[*_\"']*\s*(?:person|human|user|ai|assistant|message|question|answer)\s*[*_]*\s*:\s*", re.IGNORECASE)


def clean_turn(text: str, finished: bool = True, first_paragraph: bool = False) -> str:
    """One dialogue turn: labels and wrapping quotes removed, an unfinished last sentence dropped."""
    text = _LABEL.sub("", text.strip())
    if first_paragraph:
        text = text.split("\n\n")[0]
    text = text.strip().strip('"').strip()
    if not finished:
        ends = list(_SENTENCE_END.finditer(text))
        text = text[: ends[-1].end()] if ends else ""
    return re.sub(r"[ \t]+", " ", text).strip()


def format_dialogue(turns: list[tuple[str, str]]) -> str:
    return "\n".join(f"{speaker}: {said}" for speaker, said in turns)


class ChatScript:
    """Drives one dialogue as a single continuous chat (see `_dialogues_in_one_pass`).

    The person speaks first, in the user role; each time a turn ends — the model ends its message,
    or the turn reaches its token cap — the chat template's markers for the other role are inserted.
    After the last answer the row ends. The turns are kept as token ids, marker-free.
    """

    def __init__(self, n_exchanges: int, to_assistant: list[int], to_user: list[int], eos_id: int,
                 person_tokens: int, ai_tokens: int):
        self.n_exchanges, self.eos_id, self.limits = n_exchanges, eos_id, (person_tokens, ai_tokens)
        self.switch = (to_assistant, to_user)  # after a user turn, after an assistant turn
        self.turns: list[list[int]] = [[]]
        self.finished = False

    def after(self, token: int) -> list[int]:
        turn = len(self.turns) - 1
        ended_by_model = token == self.eos_id
        if not ended_by_model:
            self.turns[-1].append(token)
            if len(self.turns[-1]) < self.limits[turn % 2]:
                return []
        if turn + 1 >= 2 * self.n_exchanges:
            self.finished = True
            return [] if ended_by_model else [self.eos_id]
        self.turns.append([])
        switch = self.switch[turn % 2]
        return switch[1:] if ended_by_model and switch[:1] == [self.eos_id] else list(switch)


# ---------------------------------------------------------------------------------------------------
# The leak filter: the emotion word and its inflections / derived forms

_IRREGULAR: dict[str, tuple[str, ...]] = {
    "afraid": (),
    "angry": ("anger", "angers", "angered", "angering"),
    "ashamed": ("shame", "shamed", "shameful", "shamefully"),
    "envious": ("envy", "envied", "envies", "envying"),
    "furious": ("fury",),
    "guilty": ("guilt", "guiltily", "guiltless"),
    "hateful": ("hate", "hated", "hates", "hating", "hatred"),
    "hopeful": ("hope", "hoped", "hopes", "hoping", "hopefully", "hopefulness"),
    "hope": ("hopeful", "hopefully", "hopefulness"),
    "jealous": ("jealousy", "jealousies"),
    "loving": ("love", "loved", "loves", "lovingly"),
    "proud": ("pride", "proudly"),
    "sad": ("sadness", "sadly", "sadder", "saddest", "sadden", "saddened", "saddening"),
    "scared": ("scare", "scares", "scaring", "scary"),
    "terrified": ("terrify", "terrifies", "terrifying", "terror"),
    "horrified": ("horrify", "horrifies", "horrifying", "horror"),
    "grief-stricken": ("grief", "grieve", "grieved", "grieving"),
    "heartbroken": ("heartbreak", "heartbreaking"),
    "worried": ("worry", "worries", "worrying", "worrisome"),
    "amazed": ("amazement", "amazing", "amazingly"),
    "nervous": ("nerves",),
}


# Derived "roots" that are everyday words with another sense (playful -> play, tired -> tires).
_NOT_LEAKS = {"play", "plays", "please", "scar", "scars", "tir", "tirs", "tire", "tires", "bor", "bors", "kinds"}


def word_forms(word: str) -> set[str]:
    """The emotion word and its regular inflections/derivations (over-generating is harmless)."""
    w = word.lower()
    forms = {w, w + "s", w + "ly", w + "ness"}
    if w.endswith("y"):
        root = w[:-1] + "i"
        forms |= {root + "ly", root + "ness", root + "er", root + "est", w[:-1] + "ies", root + "ed"}
    if w.endswith("ed"):
        forms |= {w + "ly", w + "om"}  # frightenedly, boredom
        for stem in (w[:-2], w[:-1]):  # annoy-ed, amuse-d
            forms |= {stem, stem + "s", stem + "ment", stem[:-1] + "ing" if stem.endswith("e") else stem + "ing"}
        if w.endswith("ied"):  # terrified -> terrify
            forms |= {w[:-3] + "y", w[:-3] + "ies", w[:-3] + "ying"}
    if w.endswith("ful"):
        forms |= {w[:-3], w + "ly", w + "ness"}
    if w.endswith("ous"):
        forms |= {w + "ly", w + "ness", w[:-3] + "y"}
    if w.endswith("ic") or w.endswith("ical"):
        forms |= {w + "ally", w[:-2] + "ally", w.removesuffix("al") + "ally"}
    if w.endswith("ent") or w.endswith("ant"):
        forms |= {w[:-1] + "ce", w[:-1] + "cy", w + "ly"}
    if w.endswith("ive"):
        forms |= {w + "ly", w + "ness", w[:-3] + "ion"}
    if w.endswith("ing"):
        forms |= {w[:-3], w[:-3] + "e", w[:-3] + "es", w[:-3] + "ed", w + "ly"}
    if w.endswith("ate"):
        forms |= {w[:-3], w[:-3] + "ation", w[:-1] + "ion", w + "ly"}
    if w.endswith("e") and not w.endswith("ate"):
        forms |= {w + "d", w[:-1] + "ing", w + "ment"}
    if w.endswith("t") and not w.endswith(("ent", "ant")):
        forms |= {w + "ed", w + "ing", w + "ful", w + "fully"}
    if len(w) <= 6 and w[-1] not in "aeiouy":
        forms |= {w + "er", w + "est", w + "en", w + "ed"}
    forms |= set(_IRREGULAR.get(w, ()))
    return {form for form in forms if len(form) >= 3 and form not in _NOT_LEAKS}


@lru_cache(maxsize=None)
def leak_pattern(emotion: str) -> re.Pattern:
    """A regex matching the emotion word, its inflections, and (for phrases) the phrase itself."""
    parts = re.split(r"[\s-]+", emotion.lower())
    if len(parts) == 1:
        alternatives = sorted(word_forms(emotion), key=len, reverse=True)
    else:  # "at ease", "self-confident", "grief-stricken": the phrase with any joiner, inflecting the last word
        head = r"[\s-]*".join(re.escape(part) for part in parts[:-1])
        tails = sorted(word_forms(parts[-1]) | {parts[-1] + "ce", parts[-1][:-1] + "ce"}, key=len, reverse=True)
        alternatives = [head + r"[\s-]*" + "(?:" + "|".join(map(re.escape, tails)) + ")"]
        alternatives += sorted(_IRREGULAR.get(emotion.lower(), ()), key=len, reverse=True)
        return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)
    return re.compile(r"\b(?:" + "|".join(map(re.escape, alternatives)) + r")\b", re.IGNORECASE)


def find_leaks(text: str, emotion: str) -> list[str]:
    """The forms of `emotion` that occur in `text` (lower-cased, unique, in order of appearance)."""
    return list(dict.fromkeys(match.group(0).lower() for match in leak_pattern(emotion).finditer(text)))


# Set phrases in which an emotion word carries no emotion: an assistant's politeness and everyday
# idiom ("happy to help", "kind of", "I'd love to", "I hope this helps"). They are blanked before the
# neutral dialogues' emotion-word check, which used to drop 28 % of dialogues for them.
_IDIOMS = re.compile("|".join([
    r"\b(?:happy|pleased)\s+to\s+(?:help|assist|answer|explain|provide|clarify|share|guide|be\s+of)\b",
    r"\bkinds?\s+of\b",
    r"\b(?:what|which|this|that|any|some|every|all|the|a|one|other|same|different|these|those|many|various|several)\s+kinds?\b",
    r"\b(?:i'd|i\s+would|we'd|we\s+would|would|you'd|you\s+would)\s+love\s+to\b",
    r"\bsorry\s+(?:for|about)\s+(?:any|the)\s+(?:confusion|inconvenience|misunderstanding)\b",
    r"\bhope\s+(?:this|that|it)\s+helps\b",
    r"\btable\s+of\s+contents\b", r"\bcontents?\s+of\b",
]), re.IGNORECASE)
# Emotion words whose everyday sense is factual ("safe to eat", "the file's content", "a patient", "stay
# alert", "a sensitive setting"): they count only said of a person ("you feel safe", "I'm content").
_FACTUAL_SENSE = {"alert", "content", "dependent", "hurt", "kind", "patient", "safe", "sensitive", "stuck", "tired",
                  "trapped"}
_PERSONAL = (r"\b(?:i|you|we|they|he|she|i'm|you're|we're|they're|he's|she's)\s+"
             r"(?:(?:should|will|would|can|could|may|might|must|do|don't|did)\s+)?(?:(?:not|never)\s+)?(?:(?:am|are|is|was|were|feel|feels|felt|be|get|got|seem|seemed|become|became)\s+)?"
             r"(?:(?:so|very|really|quite|a\s+bit|more|less|too)\s+)?")


@lru_cache(maxsize=None)
def _personal_pattern(emotion: str) -> re.Pattern:
    return re.compile(_PERSONAL + leak_pattern(emotion).pattern, re.IGNORECASE)


def find_emotion_words(text: str, emotions: Iterable[str] | None = None, sense_aware: bool = True) -> list[str]:
    """Which of the emotion words (any form) occur in `text`: the neutral dialogues' check.

    `sense_aware` (the default) skips set phrases (`_IDIOMS`) and counts words with an everyday factual
    sense (`_FACTUAL_SENSE`) only when said of a person; False is the plain word match."""
    if not sense_aware:
        return [emotion for emotion in (emotions or load_emotions()) if leak_pattern(emotion).search(text)]
    text = _IDIOMS.sub(" ", text)
    return [emotion for emotion in (emotions or load_emotions())
            if (_personal_pattern(emotion) if emotion in _FACTUAL_SENSE else leak_pattern(emotion)).search(text)]


def count_words(text: str) -> int:
    """Whitespace-separated runs: the keep rule's length unit, the same whoever reads the text."""
    return len(text.split())


def keep_status(record: dict, max_emotion_words: int = MAX_EMOTION_WORDS) -> str:
    """The keep rule, from a record alone (no model): 'empty', 'leak' (a story naming its emotion),
    'malformed' (a dialogue with < 2 complete exchanges), 'emotional' (a dialogue using more than
    `max_emotion_words` distinct emotion words), 'short' (< MIN_WORDS words) or 'kept'.

    A story's status is decided when it is written and stored with it (`emolib.stories.corpus.Corpus.save`);
    the dialogues' emotion-word threshold stays a parameter of the reading (chapter 2 shows its effect)."""
    text = record.get("text") or ""
    if not text:
        return "empty"
    if record["kind"] == "story" and record.get("leaks"):
        return "leak"
    if record["kind"] == "neutral":
        if record.get("n_exchanges", 0) < 2:
            return "malformed"
        words = record.get("emotion_words")
        if len(find_emotion_words(text) if words is None else words) > max_emotion_words:
            return "emotional"
    return "short" if count_words(text) < MIN_WORDS else "kept"


def with_bos(tokenizer: Any, text: str) -> str:
    """`text` as the model reads a document: with `<bos>` in front where its tokenizer adds one (the
    writer takes strings as already rendered and adds nothing)."""
    bos = tokenizer.bos_token
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos + text if bos and ids and ids[0] == tokenizer.bos_token_id and not text.startswith(bos) else text


AGENT = "Alex"  # the agent's name in the agentic scenarios (blackmail, reward hacking)


def render_plain(messages: list[dict]) -> str:
    """A transcript for models without a chat template (base models): they continue the agent's turn."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" if m["role"] != "system" else m["content"] for m in messages]
    return "\n\n".join(parts) + f"\n\n{AGENT}:"
