"""Prompt templates for zero-shot classification, held out from the training captions.

CLIP classifies without labels by writing each class name into prompt templates ("a photo
of a {}") and picking the class whose prompts the image matches best. If the templates were
the captions the model was trained on, zero-shot accuracy would partly measure memorisation
of those exact sentences. So :data:`ZERO_SHOT_TEMPLATES` are sentences that **never** occur
among the training captions (:func:`training_captions`, every caption
:func:`minimm.data.make_captions` can produce), written only with words of the caption
vocabulary (an unknown word would be read as ``<unk>``). :func:`check_held_out` proves both.
"""
from .captions import NAMED_TEMPLATES, NONE_TEMPLATES, SYNONYMS, caption_vocabulary, tokenize
from .cifar10 import CLASSES

# {a} is the article that fits the name ("a cat", "an airplane"); 18 templates, as CLIP's
# paper uses for CIFAR-10 (its sentences are not ours: they contain words our captions lack)
ZERO_SHOT_TEMPLATES = (
    "a picture of {a} {name}",
    "an image of {a} {name}",
    "a photo of the {name}",
    "a picture of the {name}",
    "an image of the {name}",
    "a blurry picture of {a} {name}",
    "a blurry image of {a} {name}",
    "a blurry photo of the {name}",
    "a close up picture of {a} {name}",
    "a close up image of the {name}",
    "a small {name}",
    "the small {name}",
    "the {name}",
    "this is {a} {name}",
    "this is the {name}",
    "there is {a} {name} in the picture",
    "{a} {name} in this picture",
    "the {name} in the image",
)


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def fill(template, name):
    """One prompt: ``template`` with the class name and its article filled in."""
    return template.format(a=article(name), name=name)


def prompts(templates=ZERO_SHOT_TEMPLATES, classnames=CLASSES):
    """Every template for every class, class by class: row k·M + m is class k, template m
    (the order :meth:`minimm.models.CLIP.class_embeddings` expects)."""
    return [fill(t, name) for name in classnames for t in templates]


def training_captions():
    """Every caption the training data can contain, as token tuples."""
    named = {tuple(tokenize(fill(t, s))) for t in NAMED_TEMPLATES for syn in SYNONYMS
             for s in syn}
    return named | {tuple(tokenize(t)) for t in NONE_TEMPLATES}


def check_held_out(templates=ZERO_SHOT_TEMPLATES, classnames=CLASSES, vocab=None):
    """Raise ValueError if a prompt equals a training caption or uses a word outside the
    caption vocabulary; return the prompts otherwise."""
    vocab = vocab if vocab is not None else caption_vocabulary()
    seen = training_captions()
    texts = prompts(templates, classnames)
    shared = [p for p in texts if tuple(tokenize(p)) in seen]
    if shared:
        raise ValueError(f"check_held_out: {len(shared)} prompts are training captions, e.g. "
                         f"{shared[:3]}")
    unknown = sorted({w for p in texts for w in tokenize(p) if w not in vocab})
    if unknown:
        raise ValueError(f"check_held_out: words outside the caption vocabulary: {unknown}")
    return texts
