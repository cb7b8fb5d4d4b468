"""A bag of word n-grams: the wide, linear path for text.

A text input with ``encoder: {kind: bag}`` is encoded, per row, as the weights of its word
n-grams (1 to ``ngrams`` words, never crossing from one row into the next), and read by a
linear layer (``plait.layers.bag.WeightedBag``): TF-IDF and a linear model, inside the
Keras model, beside whatever other branches it has.

The array is id-based, never rows × vocabulary: each row holds its ``slots`` most heavily
weighted distinct n-grams as ``(id, weight)`` pairs, shape ``(rows, slots, 2)``, float32.
Ids: 0 pads a row; ``1 .. V`` are the fitted n-grams, most frequent first; ``V + 1 .. V +
hash_buckets`` are buckets that the n-grams outside the vocabulary share, by a stable hash
of their text (``stable_hash``). With no buckets (the default) those n-grams are dropped;
either way they are counted as unseen.

Everything runs on whole columns: the words come from ``plait.features.text.words``, each
n-gram order is one pass of numpy over the flat word array, the distinct n-grams of a batch
are joined into text once each and looked up with one ``pyarrow.compute.index_in``.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.encoders.base import Encoder
from plait.schema import FittedState, Units

SLOTS = 512
"""The most n-grams a row keeps when ``slots`` is not given (fitted: the largest number of
distinct n-grams in a training row, up to this)."""

MAX_ID = 2**24 - 1
"""Ids travel as float32 beside their weights, which holds every integer up to 2**24."""


class BagState(FittedState):
    """The fitted n-grams (most frequent first: n-gram ``i`` is id ``i + 1``), the document
    frequency of each id from 1 on (the n-grams, then the hash buckets), the number of
    training rows those were counted on, and the (id, weight) pairs kept per row.

    >>> state = BagState(vocabulary=["fit", "good", "good fit"], frequency=[3, 2, 1, 4], rows=4, slots=5)
    >>> state.buckets, state.idf().round(3).tolist()
    (1, [0.0, 1.223, 1.511, 1.916, 1.0])
    """

    vocabulary: list[str]
    frequency: list[int]
    rows: int = Field(ge=0)
    slots: int = Field(gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> BagState:
        if len(self.frequency) < len(self.vocabulary):
            raise ValueError(f"found {len(self.frequency)} frequencies; expected one per n-gram "
                             f"({len(self.vocabulary)}) and one per hash bucket")
        if len(self.frequency) > MAX_ID:
            raise ValueError(f"found {len(self.frequency)} ids; expected at most {MAX_ID}")
        return self

    @property
    def buckets(self) -> int:
        return len(self.frequency) - len(self.vocabulary)

    @property
    def size(self) -> int:
        """Rows of the linear layer's table: padding, the n-grams, the buckets."""
        return 1 + len(self.frequency)

    def idf(self) -> np.ndarray:
        """Smooth inverse document frequency per id, ``ln((1 + rows) / (1 + df)) + 1`` (0 for
        the padding id), as scikit-learn's ``TfidfVectorizer`` computes it."""
        frequency = np.asarray(self.frequency, np.float64)
        return np.concatenate([[0.0], np.log((1.0 + self.rows) / (1.0 + frequency)) + 1.0])


class BagEncoder(Encoder):
    """Word n-grams of 1 to ``ngrams`` words, weighted, then a linear layer of ``units``.

    ``weighting``: ``tfidf`` (sublinear term frequency ``1 + ln(count)`` times the smooth
    IDF fitted on the training rows), ``binary`` (1 per n-gram present) or ``count``; with
    ``normalize`` each row's weights are then divided by their L2 norm, over all its n-grams.
    The vocabulary holds the ``max_features`` n-grams found in the most training rows (at
    least ``min_frequency`` of the text input; ties in byte order); ``hash_buckets`` extra
    ids share the rest by hash (0: the rest is dropped). A row keeps its ``slots`` most
    heavily weighted n-grams (fitted as the most a training row has, up to 512).

    The text input's ``min_frequency`` and ``lowercase`` apply; ``length``,
    ``vocabulary_size`` and ``embedding_dim`` do not (a bag reads every word, and has no
    word embedding).

    >>> bag = BagEncoder(ngrams=2)
    >>> state = bag.fit_text(pa.array([["good", "fit"], ["good"], ["bad", "fit"]]), min_frequency=2)
    >>> state.vocabulary, state.slots
    (['fit', 'good'], 2)
    >>> values, unseen = bag.encode_text(pa.array([["good", "fit"], None]), state)
    >>> values[0].astype(float).round(3).tolist(), values[1].tolist(), unseen
    ([[1.0, 0.707], [2.0, 0.707]], [[0.0, 0.0], [0.0, 0.0]], 1)
    """

    kind: Literal["bag"] = "bag"
    ngrams: int = Field(default=2, ge=1, le=5)
    weighting: Literal["tfidf", "binary", "count"] = "tfidf"
    normalize: bool = True
    max_features: int = Field(default=200_000, gt=0, le=8_000_000)
    hash_buckets: int = Field(default=0, ge=0, le=8_000_000)
    slots: int | None = Field(default=None, gt=0, le=16384)
    units: Units = 64

    def preprocessing(self) -> dict[str, Any]:
        """The bag is the encoded array: all but the linear layer's ``units`` shape it."""
        return self.model_dump(mode="json", exclude={"units"})

    # -- fitting and encoding --------------------------------------------------------------

    def fit_text(self, tokens: pa.Array, min_frequency: int) -> BagState:
        """The vocabulary, document frequencies and slots, from each row's words."""
        rows = len(tokens)
        row, gram, grams = occurrences(tokens, self.ngrams)
        frequency = document_frequency(row, gram, len(grams))
        kept = np.flatnonzero(frequency >= min_frequency)
        ranked = pa.table({"gram": grams.take(pa.array(kept)), "frequency": frequency[kept]})
        order = pc.sort_indices(ranked, sort_keys=[("frequency", "descending"), ("gram", "ascending")])
        ranked = ranked.take(order.slice(0, self.max_features))
        vocabulary = ranked["gram"].to_pylist()
        known = ranked["frequency"].to_numpy().tolist()
        draft = BagState(vocabulary=vocabulary, frequency=known + [0] * self.hash_buckets, rows=rows, slots=1)
        found_row, ids, _, _ = counted_ids(row, gram, grams, draft)
        hashed = ids[ids > len(vocabulary)] - len(vocabulary) - 1
        buckets = np.bincount(hashed, minlength=self.hash_buckets).tolist() if self.hash_buckets else []
        slots = self.slots or int(min(SLOTS, max(1, np.bincount(found_row).max(initial=1))))
        return BagState(vocabulary=vocabulary, frequency=known + buckets, rows=rows, slots=slots)

    def encode_text(self, tokens: pa.Array, state: BagState) -> tuple[np.ndarray, int]:
        """Each row's (id, weight) pairs, ``(rows, slots, 2)``, in id order (most frequent
        n-gram first); a row with more n-grams than slots keeps its heaviest, heaviest first.
        And how many n-gram occurrences were outside the vocabulary (hashed, or dropped)."""
        rows, slots = len(tokens), state.slots
        row, ids, count, unseen = counted_ids(*occurrences(tokens, self.ngrams), state)
        weight = self.weights(ids, count, state)
        if self.normalize:
            norm = np.sqrt(np.bincount(row, weights=weight**2, minlength=rows))
            weight = weight / np.where(norm > 0, norm, 1.0)[row]
        per_row = np.bincount(row, minlength=rows)
        crowded = np.flatnonzero((per_row > slots)[row])
        if crowded.size:
            # Only rows that overflow are sorted, heaviest first (the sum the layer takes is
            # the same in any order). Weights are positive, so row - weight / (1 + largest)
            # orders by row, then weight; the stable sort keeps id order among equal weights.
            key = row[crowded] - weight[crowded] / (1.0 + weight.max())
            order = np.arange(row.size)
            order[crowded] = crowded[np.argsort(key, kind="stable")]
            ids, weight = ids[order], weight[order]
        starts = np.concatenate([[0], np.cumsum(per_row)[:-1]])
        position = np.arange(row.size) - starts[row]
        kept = position < slots
        out = np.zeros((rows * slots, 2), np.float32)
        out[row[kept] * slots + position[kept]] = np.stack([ids[kept], weight[kept]], axis=1)
        return out.reshape(rows, slots, 2), unseen

    def weights(self, ids: np.ndarray, count: np.ndarray, state: BagState) -> np.ndarray:
        """The weight of each (row, n-gram) with this count, before it is cut to slots."""
        if self.weighting == "tfidf":
            return (1.0 + np.log(count)) * prepared(state)[1][ids]
        if self.weighting == "binary":
            return np.ones(count.size)
        return count.astype(np.float64)

    def placeholder(self, min_frequency: int) -> BagState:
        """A state of the declared sizes, for describing a model before fitting."""
        return BagState(vocabulary=[f"ngram_{i}" for i in range(self.max_features)],
                        frequency=[min_frequency] * (self.max_features + self.hash_buckets), rows=1,
                        slots=self.slots or SLOTS)

    # -- description and layers -------------------------------------------------------------

    def describe(self, state: BagState) -> str:
        """What the encoded array holds, in words."""
        weighting = {"tfidf": "tf-idf (1 + ln count) x idf", "binary": "1 per n-gram",
                     "count": "the count"}[self.weighting]
        buckets = f", {state.buckets} hash buckets" if state.buckets else ""
        return (f"(id, weight) pairs of each row's {state.slots} most heavily weighted word 1-{self.ngrams}-"
                f"grams (id 0: padding, then {len(state.vocabulary)} n-grams, most frequent first"
                f"{buckets}); weight {weighting}{', L2-normalised per row' if self.normalize else ''}")

    def word_shares(self, tokens: list[str], ids: np.ndarray, shares: np.ndarray,
                    state: BagState) -> np.ndarray:
        """One row's attribution per word (``tokens``, as encoded), from the shares of its
        slots (``ids`` and their ``shares``): each id's share split evenly over the n-gram
        occurrences that map to it, and each occurrence's over its words.

        >>> bag = BagEncoder(ngrams=2)
        >>> state = BagState(vocabulary=["good", "fit", "good fit"], frequency=[1, 1, 1], rows=1, slots=3)
        >>> shares = np.array([0.25, 0.125, 0.5])
        >>> bag.word_shares(["good", "fit"], np.array([1, 2, 3]), shares, state).tolist()
        [0.5, 0.375]
        """
        starts = [(start, order) for order in range(1, self.ngrams + 1)
                  for start in range(len(tokens) - order + 1)]
        if not starts:
            return np.zeros(len(tokens))
        grams = pa.array([" ".join(tokens[start:start + order]) for start, order in starts],
                         pa.large_string())
        occurrence_ids, _ = ids_of(grams, state)
        per_id = np.zeros(state.size)
        np.add.at(per_id, ids.astype(np.int64), shares)
        per_id[0] = 0.0
        counts = np.bincount(occurrence_ids, minlength=state.size).astype(np.float64)
        result = np.zeros(len(tokens))
        for (start, order), gram_id in zip(starts, occurrence_ids, strict=True):
            if gram_id:
                result[start:start + order] += per_id[gram_id] / counts[gram_id] / order
        return result

    def bag_layers(self, x: Any, state: BagState, name: str) -> Any:
        """The linear layer on the (id, weight) pairs."""
        from plait.layers.bag import WeightedBag

        return WeightedBag(state.size, self.units, name=f"{name}_bag")(x)


def occurrences(tokens: pa.Array, ngrams: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Every n-gram occurrence of 1 to ``ngrams`` words inside a row: its row, and its index
    in the distinct n-grams of these rows, which come back as text (words joined by one
    space). Empty words (an empty text) are no words.

    >>> row, gram, grams = occurrences(pa.array([["a", "b", "a"], [""], ["b"]]), 2)
    >>> grams.to_pylist(), row.tolist(), [grams[int(i)].as_py() for i in gram]
    (['a', 'b', 'a b', 'b a'], [0, 0, 0, 2, 0, 0], ['a', 'b', 'a', 'b', 'a b', 'b a'])
    """
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    flat = pc.list_flatten(tokens)
    owner = pc.list_parent_indices(tokens).to_numpy().astype(np.int64)
    present = pc.greater(pc.binary_length(flat), 0)
    flat, owner = flat.filter(present).cast(pa.large_string()), owner[present.to_numpy(zero_copy_only=False)]
    encoded = pc.dictionary_encode(flat)
    word = encoded.indices.to_numpy().astype(np.int64)
    distinct_words, total = max(1, len(encoded.dictionary)), len(word)
    starts, index = np.arange(total), word
    space = pa.scalar(" ", pa.large_string())
    rows, grams, texts = [owner], [word], [encoded.dictionary]
    offset = len(encoded.dictionary)
    for order in range(2, ngrams + 1):
        previous = np.empty(total, np.int64)  # at each start, the number of the (n-1)-gram there
        previous[starts] = index
        starts = starts[starts + order - 1 < total]
        starts = starts[owner[starts + order - 1] == owner[starts]]
        if not starts.size:
            break
        # an n-gram is its first (n-1)-gram, numbered among those, and one more word
        first, index = grouped(previous[starts] * distinct_words + word[starts + order - 1])
        parts = [flat.take(pa.array(starts[first] + step)) for step in range(order)]
        texts.append(pc.binary_join_element_wise(*parts, space))
        rows.append(owner[starts])
        grams.append(index + offset)
        offset += len(first)
    return np.concatenate(rows), np.concatenate(grams), pa.concat_arrays(texts)


def grouped(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where one occurrence of each distinct code is, and the number of each code among the
    distinct ones (in increasing order). ``np.unique`` does the same, but several times
    slower: it keeps the first occurrence (a stable sort), where any one will do.

    >>> [part.tolist() for part in grouped(np.array([7, 3, 7, 9]))]
    [[1, 0, 3], [1, 0, 1, 2]]
    """
    order = np.argsort(code)
    new = np.ones(code.size, bool)
    new[1:] = code[order[1:]] != code[order[:-1]]
    number = np.empty(code.size, np.int64)
    number[order] = np.cumsum(new) - 1
    return order[new], number


def distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values in increasing order, and how often each occurs (``np.unique`` with
    its counts, by one sort).

    >>> [part.tolist() for part in distinct(np.array([5, 2, 5]))]
    [[2, 5], [1, 2]]
    """
    ordered = np.sort(values)
    new = np.ones(ordered.size, bool)
    new[1:] = ordered[1:] != ordered[:-1]
    at = np.flatnonzero(new)
    return ordered[at], np.diff(np.append(at, ordered.size))


def document_frequency(row: np.ndarray, gram: np.ndarray, grams: int) -> np.ndarray:
    """In how many rows each of the ``grams`` distinct n-grams occurs."""
    if not row.size:
        return np.zeros(grams, np.int64)
    return np.bincount(distinct(row * grams + gram)[0] % grams, minlength=grams)


def counted_ids(row: np.ndarray, gram: np.ndarray, grams: pa.Array,
                state: BagState) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Each distinct (row, id) with its count, rows in order; and the occurrences outside the
    vocabulary. Id 0 (dropped) is left out."""
    id_of_gram, unseen_gram = ids_of(grams, state)
    ids = id_of_gram[gram]
    unseen = int(np.count_nonzero(unseen_gram[gram]))
    found = ids > 0
    key, count = distinct(row[found] * state.size + ids[found])
    return key // state.size, key % state.size, count, unseen


def ids_of(grams: pa.Array, state: BagState) -> tuple[np.ndarray, np.ndarray]:
    """Each n-gram's id (its vocabulary id, else its hash bucket's, else 0: dropped), and
    which n-grams were outside the vocabulary."""
    id_of_gram = gram_ids(grams, state)
    unseen_gram = id_of_gram == 0
    if state.buckets and unseen_gram.any():
        hashed = stable_hash(grams.filter(pa.array(unseen_gram))) % np.uint64(state.buckets)
        id_of_gram[unseen_gram] = len(state.vocabulary) + 1 + hashed.astype(np.int64)
    return id_of_gram, unseen_gram


SMALL_LOOKUP = 4096
"""Up to this many distinct n-grams (a request's) are looked up in a dictionary kept with the
state; more (a file's batch) by Arrow, whose hash table of the vocabulary is built per call."""


def gram_ids(grams: pa.Array, state: BagState) -> np.ndarray:
    """1 + each n-gram's position in the vocabulary; 0 outside it."""
    vocabulary, _, positions = prepared(state)
    if len(grams) <= SMALL_LOOKUP:
        return np.fromiter((positions.get(gram, -1) + 1 for gram in grams.to_pylist()), np.int64, len(grams))
    index = pc.index_in(grams, value_set=vocabulary)
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1


_PREPARED: dict[int, tuple[BagState, pa.Array, np.ndarray, dict[str, int]]] = {}
_PREPARING = threading.Lock()


def prepared(state: BagState) -> tuple[pa.Array, np.ndarray, dict[str, int]]:
    """The vocabulary as an Arrow array, the IDF per id and each n-gram's position, kept for
    the last few states: a request of one row should not convert 200,000 n-grams again."""
    with _PREPARING:
        cached = _PREPARED.get(id(state))
        # the cache holds the state itself, so its id cannot be reused by another one meanwhile
        if cached is None or cached[0] is not state:
            if len(_PREPARED) >= 4:
                _PREPARED.pop(next(iter(_PREPARED)))
            positions = {gram: position for position, gram in enumerate(state.vocabulary)}
            cached = (state, pa.array(state.vocabulary, pa.large_string()), state.idf(), positions)
            _PREPARED[id(state)] = cached
    return cached[1], cached[2], cached[3]


def stable_hash(texts: pa.Array) -> np.ndarray:
    """A 64-bit hash of each text's UTF-8 bytes, the same on every machine and run: the
    bytes as a polynomial in the FNV prime modulo 2**64, finished by the splitmix64 mixer.

    >>> stable_hash(pa.array(["good fit", "fit", ""])).tolist()
    [329248735944249114, 15573080305391512008, 0]
    """
    texts = pc.fill_null(texts, "").cast(pa.large_string())
    _, offset_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offset_buffer, np.int64)[texts.offset:texts.offset + len(texts) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]:offsets[-1]].astype(np.uint64)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    longest = int(lengths.max(initial=0))
    powers = np.ones(max(1, longest), np.uint64)
    # numpy integer arrays wrap on overflow: exactly arithmetic modulo 2**64
    powers[1:] = np.uint64(1099511628211)
    powers = np.multiply.accumulate(powers)
    string = np.repeat(np.arange(len(texts)), lengths)
    from_end = (offsets[1:][string] - 1 - np.arange(data.size)).astype(np.int64)
    terms = data * powers[from_end]
    value = np.zeros(len(texts), np.uint64)
    filled = lengths > 0
    if filled.any():
        value[filled] = np.add.reduceat(terms, offsets[:-1][filled])
    value ^= value >> np.uint64(30)
    value *= np.uint64(0xBF58476D1CE4E5B9)
    value ^= value >> np.uint64(27)
    value *= np.uint64(0x94D049BB133111EB)
    value ^= value >> np.uint64(31)
    value[~filled] = 0
    return value
