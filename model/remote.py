"""Sampling through an OpenAI-compatible inference server (vLLM, TGI, llama-server, `transformers serve`).

    server = Server("http://gpu:8000", "proverbs", api_key=None, timeout=60, max_in_flight=4)
    sampler = open_remote(server, folder=Path("checkpoints/run1"))   # or corpus=Path("corpus.txt")
    batch = sampler.candidates(SampleRequest(count=5))                 # like model.sample.Sampler's

Only the raw texts come from the server (`POST /v1/completions`); the check of the parameters, the filters and the
refill loop are model.candidates.BaseSampler's, so copies of the training texts are caught as in-process. The training
texts, the separator and the tokenizer (to frame the prompt as in training and to refuse an over-long prefix before
the server does) come from a local run folder, which needs no weights; without one, from a corpus file, and the
prompt starts with the separator line as text.

Requests run in the model worker's thread (model/worker.py), so its queue bound, timeout and on_queued stay; the
`n` samples of one draw go as one request with `n` and, for a server that ignores `n`, as up to `max_in_flight`
requests at once. A single-token separator's id goes as `stop_token_ids` until the server refuses the field.
Every fault is one RemoteError line.
"""

import itertools
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from model.candidates import BaseSampler, Sample, SampleRequest, cut, room
from model.corpus import SEPARATOR, read_corpus
from model.errors import SamplingError
from model.filters import CandidateFilter
from model.runinfo import loading, read_blocks, read_json, read_meta
from model.tokenizer import separator_ids

log = logging.getLogger(__name__)

MASK = "**********"
USERINFO = re.compile(r"//[^/@]*@")  # http://user:password@host: httpx sends it as basic auth


class RemoteError(SamplingError):
    """The inference server cannot be reached, refused a request or gave an answer that is not a completion;
    `status` is the HTTP status of a refusal, `said` the server's own message (scrubbed)."""

    def __init__(self, message: str, status: int | None = None, said: str = ""):
        super().__init__(message)
        self.status, self.said = status, said

    def refused_field(self, field: str) -> bool:
        """Whether the server refused the request for a field it does not take: 400 or 422 naming `field`, or
        pydantic's "Extra inputs are not permitted" (`transformers serve` says "Unexpected fields ...: {'field'}")."""
        return self.status in (400, 422) and (field in self.said or "extra" in self.said.lower())


@dataclass(frozen=True)
class Server:
    """An OpenAI-compatible server and the model it serves; `api_key` is sent as a bearer token."""

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_in_flight: int = 4

    def models(self) -> list[str]:
        """The served models' names (GET /v1/models), e.g. ["proverbs"]."""
        data = self.call("GET", "/v1/models")
        try:
            return [entry["id"] for entry in data["data"]]
        except (KeyError, TypeError) as err:
            raise RemoteError(f"The sampler at {self.where} answered /v1/models without data[].id ({err!r}).") from None

    def complete(self, body: dict) -> dict:
        """One POST /v1/completions of `body` (the model's name added)."""
        return self.call("POST", "/v1/completions", json={"model": self.model, **body})

    def call(self, method: str, path: str, json: dict | None = None) -> dict:
        """The JSON answer of one request, or a RemoteError of one line (the server's own message, scrubbed)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.request(method, self.base + path, json=json, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            raise RemoteError(f"The sampler at {self.where} did not answer within {self.timeout:g} s "
                              "(sampler_timeout).") from None
        except httpx.HTTPError as err:
            raise RemoteError(f"The sampler at {self.where} cannot be reached ({type(err).__name__}: "
                              f"{self.scrub(str(err))}); is it running?") from None
        if response.status_code >= 400:
            said = self.scrub(server_message(response))
            raise RemoteError(f"The sampler at {self.where} refused {path}: HTTP {response.status_code}: {said}",
                              response.status_code, said)
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"The sampler at {self.where} answered {path} with something that is not JSON.") from None

    @property
    def base(self) -> str:
        """The URL the API's paths follow: "http://gpu:8000" also when given as OpenAI's base URL, ".../v1"."""
        return self.url.rstrip("/").removesuffix("/v1")

    @property
    def where(self) -> str:
        """The URL as shown and logged: without a user:password@ part."""
        return USERINFO.sub("//", self.url, count=1)

    def scrub(self, text: str) -> str:
        """`text` without the key or the URL's user:password@ part."""
        text = text.replace(self.url, self.where)
        return text.replace(self.api_key, MASK) if self.api_key else text


def server_message(response: httpx.Response) -> str:
    """What a server says went wrong: vLLM's and OpenAI's error.message, FastAPI's detail, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("detail") or data.get("message")
        if message:
            return str(message)[:300]
    return json.dumps(data)[:300]


class RemoteSampler(BaseSampler):
    """Draws raw texts from a server; everything else is BaseSampler's. `start` is the text a prompt opens with (a
    text of the corpus follows the separator); `tokenizer` and `n_ctx`, when known, size a prompt here."""

    def __init__(self, server: Server, separator: str, blocks: list[str], run_name: str, checkpoint_id: str = "",
                 tokenizer=None, n_ctx: int | None = None, blocked_words=(), max_length: int = 280):
        self.server = server
        self.separator, self.run_name, self.checkpoint_id = separator, run_name, checkpoint_id
        self.filter = CandidateFilter(blocks, blocked_words=blocked_words, max_length=max_length)
        self.tokenizer, self.n_ctx = tokenizer, n_ctx
        start_ids = separator_ids(tokenizer, separator) if tokenizer else []
        self.start = tokenizer.decode(start_ids) if tokenizer else f"\n{separator}\n"
        self.start_tokens = len(start_ids)
        self.stop_ids = start_ids if len(start_ids) == 1 else []  # only a single-token separator has an id to stop at
        self.takes_n = True  # until a server answers fewer samples than asked
        self.takes_stop_ids = True  # until a server refuses the field
        self.pool = ThreadPoolExecutor(server.max_in_flight, thread_name_prefix="sampler-request")
        self.seeds: itertools.count | None = None
        self.lock = threading.Lock()

    @property
    def device(self) -> str:
        return self.server.where

    @property
    def backend(self) -> str:
        return self.server.where

    def _seed(self, seed: int | None) -> None:
        """Requests from now on carry seed, seed + 1, ...: one draw's concurrent requests must not repeat each other."""
        self.seeds = itertools.count(seed) if seed is not None else None

    def _sample_rows(self, request: SampleRequest, n: int, logits_processor=None) -> list[Sample]:
        if logits_processor:
            raise SamplingError("A remote sampler takes no logits processors.")
        body = self._body(request)
        samples = self._request(body, request, n) if self.takes_n else []
        if len(samples) < n and self.takes_n:
            self.takes_n = False
            log.info("the sampler at %s ignores n: drawing one sample a request", self.server.where)
        rest = list(self.pool.map(lambda _: self._request(body, request, 1), range(n - len(samples))))
        return (samples + [sample for answer in rest for sample in answer])[:n]

    def _body(self, request: SampleRequest) -> dict:
        """The /v1/completions fields of `request` (`n` and `seed` are added per request)."""
        # a separator that is a special token may never match `stop` as text: its id goes as stop_token_ids (vLLM), and
        # the run folder's generation_config.json lists it as an end-of-text token, which transformers serve honours
        body = {"prompt": self.start + request.prefix, "temperature": request.temperature}
        if self.separator:
            body["stop"] = [self.separator]
        if self.tokenizer is not None and self.n_ctx:
            prefix = len(self.tokenizer.encode(request.prefix)) if request.prefix else 0
            body["max_tokens"] = room(self.start_tokens, prefix, self.n_ctx, request.length)
        elif request.length is not None:
            body["max_tokens"] = request.length
        if request.top_p:
            body["top_p"] = request.top_p
        if request.top_k:
            body["top_k"] = request.top_k  # vLLM, TGI, llama-server and transformers serve take it; OpenAI does not
        return body

    def _request(self, body: dict, request: SampleRequest, n: int) -> list[Sample]:
        """The samples of one request for `n` of them, each cut at the separator here whatever the server did."""
        with self.lock:
            seed = next(self.seeds) if self.seeds else None
        extra = ({"n": n} if n > 1 else {}) | ({"seed": seed} if seed is not None else {})
        answer = self._complete(body | extra)
        try:
            texts = [choice["text"] for choice in answer["choices"]]
            tokens = answer.get("usage", {}).get("completion_tokens", 0) // max(1, len(texts))
            if not texts or not all(isinstance(text, str) for text in texts):
                raise ValueError("no texts")
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise RemoteError(f"The sampler at {self.server.where} answered without choices[].text "
                              f"({err!r}).") from None
        return [Sample(cut(text, request, self.separator), tokens) for text in texts]

    def _complete(self, body: dict) -> dict:
        """The server's answer to `body`, with the separator's stop_token_ids while the server takes them: one that
        refuses the field (`transformers serve`, OpenAI) is asked again without it, and never again with it."""
        if not (self.stop_ids and self.takes_stop_ids):
            return self.server.complete(body)
        try:
            return self.server.complete(body | {"stop_token_ids": self.stop_ids})
        except RemoteError as err:
            if not err.refused_field("stop_token_ids"):
                raise
        answer = self.server.complete(body)  # a fault here was not the field's: nothing is remembered
        with self.lock:
            if self.takes_stop_ids:
                self.takes_stop_ids = False
                log.info("the sampler at %s takes no stop_token_ids: stopping at the separator's text only",
                         self.server.where)
        return answer


def open_remote(server: Server, folder: Path | None = None, corpus: Path | None = None, blocked_words=(),
                max_length: int = 280, max_corpus_bytes: int | None = None) -> RemoteSampler:
    """A RemoteSampler whose separator, tokenizer and training texts come from a local run folder (no weights are
    read), or else from a corpus file (the separator is the default one)."""
    from transformers import PreTrainedTokenizerFast  # not AutoTokenizer, which imports torch

    if folder is None:
        limit = {"max_bytes": max_corpus_bytes} if max_corpus_bytes else {}
        blocks = read_corpus(corpus, SEPARATOR, **limit).blocks
        return RemoteSampler(server, SEPARATOR, blocks, server.model, blocked_words=blocked_words,
                             max_length=max_length)
    meta, separator = read_meta(folder)
    with loading(folder / "tokenizer.json"):
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    n_ctx = read_json(folder / "config.json").get("n_positions")
    return RemoteSampler(server, separator, read_blocks(folder, separator), folder.name, meta.get("checkpoint_id", ""),
                         tokenizer, n_ctx, blocked_words, max_length)
