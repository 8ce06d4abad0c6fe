"""The documents benchmark (issue 22, item 9), not a test.

1. Ingestion: generated text PDFs (fpdf2) read through the upload pipeline
   (`document_ingest_file`: extract, chunk, embed, store), in pages per second, without
   and with embeddings (the fake upstream's /v1/embeddings).
2. Retrieval at 100,000 chunks on the default profile (SQLite): `retrieve()` latency,
   p50/p95, full text and hybrid, over the whole collection, over one document among
   them, and over a scope small enough to compare every vector; the time to embed the
   question is measured apart. Target: p95 <= 50 ms.
3. The extra time to first token a retrieved answer adds: a question in a conversation
   with a large document (answered from retrieved passages) against one without, through
   a real daphne and the fake upstream. Target: <= 100 ms at p50.

    python -m bench.documents [--chunks 100000] [--queries 300] [--dimensions 1536]

The corpus is generated here, deterministic for a seed: German-looking words from
syllables, Zipf-Mandelbrot frequencies (the commonest content word in about half the
passages, as in a real handbook), a third of the words function words; each question
takes words of one passage, rarer ones first, as a question about it would. Stored
vectors of the 100,000 chunks are random unit vectors (their values do not change the
time; computing them through the fake upstream would take minutes); the question's comes
from the fake upstream, of the same dimensions. Results go to
test-artifacts/bench-documents.json and to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.client import request, request_json, sse_events

# bench.run imports the app (config.asgi), which sets Django up from the environment as it
# is then: it is imported in main() only once this run's settings are in os.environ.
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HOST = "127.0.0.1"
MODEL = "fake-model"
API_KEY = "bench-upstream-key"

EMBEDDINGS_MODEL = "fake-embed"
_SYLLABLES = (
    "ver trag ar beit zeit ur laub an ge bot rech nung kun de pro jekt lei tung sys tem da ten schutz "
    "richt li nie frist kün di gung ab wal per so nal rei se kos ten si cher heit netz werk ser "
    "lo gin pass wort ma schi ne la be ra tung wei ter bil dung ge halt ab tei lung haus halt "
    "plan be schaf fung rah men an trag prü fung frei ga be"
)
SYLLABLES = _SYLLABLES.split()
_FUNCTION_WORDS = (
    "der die das und ist nicht mit für auf ein eine zu von im den dem des bei nach wird werden "
    "oder als auch wie wenn dass sich es sie wir an aus"
)
FUNCTION_WORDS = _FUNCTION_WORDS.split()
CONTENT_WORDS = 40_000
# Zipf-Mandelbrot: the word of rank r is drawn with weight 1 / (r + OFFSET) ** EXPONENT.
OFFSET, EXPONENT = 30, 1.1
FUNCTION_SHARE = 0.35
CHUNK_CHARS = 1200
PAGE_CHARS = 1800


class Corpus:
    """Generated text and the questions about it, the same for a seed."""

    def __init__(self, seed: int = 1) -> None:
        rng = random.Random(seed)
        words: dict[str, None] = {}
        while len(words) < CONTENT_WORDS:
            words["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
        self.words = list(words)
        self.cumulative = list(
            itertools.accumulate(1 / (r + OFFSET) ** EXPONENT for r in range(1, CONTENT_WORDS + 1))
        )
        self.rank = {word: r for r, word in enumerate(self.words)}
        self.rng = random.Random(seed + 1)

    def text(self, chars: int) -> str:
        """Sentences of 8 to 18 words until `chars` characters."""
        rng, sentences, length = self.rng, [], 0
        while length < chars:
            count = rng.randint(8, 18)
            content = rng.choices(self.words, cum_weights=self.cumulative, k=count)
            sentence = [rng.choice(FUNCTION_WORDS) if rng.random() < FUNCTION_SHARE else w for w in content]
            text = " ".join(sentence).capitalize() + "."
            sentences.append(text)
            length += len(text) + 1
        return " ".join(sentences)

    def question(self, passage: str) -> str:
        """A question about `passage`: two of its rarer words, one or two of its others,
        and function words."""
        rng = self.rng
        own = sorted(
            {w for w in passage.lower().replace(".", "").split() if w in self.rank}, key=self.rank.get
        )
        rare, other = own[len(own) // 2 :], own
        picked = rng.sample(rare, min(2, len(rare))) + rng.sample(other, min(rng.randint(1, 2), len(other)))
        return f"Wie {rng.choice(FUNCTION_WORDS)} {' '.join(picked)}?"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    at = lambda p: ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]  # noqa: E731
    return {
        "p50": round(at(0.5), 2),
        "p95": round(at(0.95), 2),
        "max": round(ordered[-1], 2),
        "n": len(values),
    }


# --------------------------------------------------------------------------- the database


def store_ready(document, corpus: Corpus, rng, count: int, dimensions: int) -> None:
    """Save `document` as read: `count` passages of generated text with random unit vectors."""
    import numpy as np

    from assistant.documents.models import Chunk

    vectors = rng.standard_normal((count, dimensions)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    document.save()
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            ordinal=n,
            page=n + 1,
            text=corpus.text(CHUNK_CHARS),
            embedding=vectors[n].tobytes(),
        )
        for n in range(count)
    )


def fill(corpus: Corpus, chunks: int, dimensions: int, per_document: int = 100) -> tuple[int, list[int]]:
    """A collection of `chunks` passages with random unit vectors; its id and the ids of
    some passages (the questions' targets)."""
    import numpy as np
    from django.db import transaction

    from assistant.documents.models import Chunk, Collection, Document

    collection = Collection.objects.create(slug="bench", name="Bench", everyone=True)
    rng = np.random.default_rng(1)
    for d in range(chunks // per_document):
        with transaction.atomic():
            document = Document(
                collection=collection, path=f"bench/{d}.pdf", name=f"Handbuch {d}.pdf", kind="pdf",
                size=1, sha256="0" * 64, status=Document.Status.READY, pages=per_document,
            )  # fmt: skip
            document.file.name = f"documents/bench/{d}"
            store_ready(document, corpus, rng, per_document, dimensions)
    targets = list(Chunk.objects.order_by("?").values_list("pk", flat=True)[:1000])
    return collection.pk, targets


def user_document(corpus: Corpus, conversation_id, owner_id: int, chunks: int, dimensions: int):
    """A ready document of `chunks` passages in a conversation, with random unit vectors."""
    import numpy as np

    from assistant.documents.models import Document

    document = Document(
        owner_id=owner_id, conversation_id=conversation_id, name="Vertrag.pdf", kind="pdf", size=1,
        sha256="0" * 64, status=Document.Status.READY, pages=chunks, chars=chunks * CHUNK_CHARS,
    )  # fmt: skip
    document.file.name = f"documents/bench/{uuid.uuid4()}"
    store_ready(document, corpus, np.random.default_rng(2), chunks, dimensions)
    return document


# --------------------------------------------------------------------------- 1. ingestion


def pdf_of(corpus: Corpus, pages: int) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for _ in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 5, corpus.text(PAGE_CHARS).encode("latin-1", "replace").decode("latin-1"))
    return bytes(pdf.output())


def ingestion(corpus: Corpus, documents: int, pages: int, embeddings: bool) -> dict:
    """Read `documents` PDFs of `pages` pages each through the upload pipeline, one after
    another in this thread: pages per second."""
    from django.conf import settings

    from assistant.documents.ingest import document_ingest_file
    from assistant.documents.models import Collection, Document

    settings.ASSISTANT_EMBEDDINGS_MODEL = EMBEDDINGS_MODEL if embeddings else ""
    collection = Collection.objects.create(slug=f"ingest-{secrets.token_hex(4)}", name="Ingestion")
    files = [pdf_of(corpus, pages) for _ in range(documents)]
    started = time.perf_counter()
    ended = [
        document_ingest_file(collection=collection, path=f"{n}.pdf", name=f"{n}.pdf", file=io.BytesIO(data))
        for n, data in enumerate(files)
    ]
    seconds = time.perf_counter() - started
    failed = [d.error_code for d in ended if d.status != Document.Status.READY]
    chunks = sum(d.chunks.count() for d in ended)
    return {
        "embeddings": embeddings,
        "documents": documents,
        "pages": documents * pages,
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "pages_per_second": round(documents * pages / seconds, 1),
        "failed": failed,
    }


# --------------------------------------------------------------------------- 2. retrieval


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def timed_cpu(call) -> tuple[float, float, object]:
    """Wall-clock and this thread's CPU milliseconds of `call()`: on a shared machine the
    second is what the work itself costs, the first what it waited for a core too."""
    started, cpu = time.perf_counter(), time.thread_time()
    result = call()
    return (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000, result


def retrieval(corpus: Corpus, collection: int, targets: list[int], queries: int, small: dict) -> dict:
    """retrieve() over the whole collection, one document, and a small scope, each with and
    without embeddings; the question's embedding apart; how often the passage a question
    was made from comes back among the ASSISTANT_RETRIEVAL_PASSAGES."""
    from django.conf import settings

    from assistant.documents.embeddings import embed_query
    from assistant.documents.models import Chunk
    from assistant.documents.retrieval import retrieve

    passages = dict(Chunk.objects.filter(pk__in=targets[:queries]).values_list("pk", "text"))
    questions = [(pk, corpus.question(text)) for pk, text in passages.items()]
    limit = settings.ASSISTANT_RETRIEVAL_PASSAGES
    results = {}
    scopes = {
        f"collection ({small['collection_chunks']:,} chunks)": {"documents": [], "collections": [collection]},
        f"one document ({small['one_chunks']} chunks)": {"documents": [small["one"]], "collections": []},
        f"small scope ({small['many_chunks']} chunks)": {"documents": small["many"], "collections": []},
    }
    for embeddings in (False, True):
        settings.ASSISTANT_EMBEDDINGS_MODEL = EMBEDDINGS_MODEL if embeddings else ""
        for name, scope in scopes.items():
            for _, question in questions[:5]:  # warm: the page cache, the connection, numpy
                retrieve(question, limit=limit, **scope)
            times, cpu_times, found = [], [], 0
            for pk, question in questions:
                ms, cpu_ms, hits = timed_cpu(lambda q=question, s=scope: retrieve(q, limit=limit, **s))
                times.append(ms)
                cpu_times.append(cpu_ms)
                found += any(hit.chunk_id == pk for hit in hits)
            row = {
                "embeddings": embeddings,
                "scope": name,
                **percentiles(times),
                "cpu": percentiles(cpu_times),
            }
            if name.startswith("collection") and not embeddings:  # random vectors find nothing
                row["found_share"] = round(found / len(questions), 3)
            results[f"{name}, {'hybrid' if embeddings else 'full text'}"] = row
    settings.ASSISTANT_EMBEDDINGS_MODEL = EMBEDDINGS_MODEL
    embed_times = [timed(lambda q=q: embed_query(q + " x"))[0] for _, q in questions[:100]]
    results["embed the question (fake upstream)"] = {
        "embeddings": True,
        "scope": "-",
        **percentiles(embed_times),
    }
    return results


# --------------------------------------------------------------------------- 4. conversations


def conversation_search(corpus: Corpus, conversations: int, queries: int, dimensions: int) -> dict:
    """The sidebar search over a user's `conversations` (a question and an answer each,
    random vectors stored), with and without embeddings."""
    import numpy as np
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from assistant import selectors
    from assistant.documents.conversation_vectors import ConversationVector
    from assistant.models import Conversation, Message

    user = get_user_model().objects.create_user("bench-search")
    rng = np.random.default_rng(3)
    made = Conversation.objects.bulk_create(
        Conversation(owner=user, title=corpus.text(30)[:60], model=MODEL) for _ in range(conversations)
    )
    Message.objects.bulk_create(
        Message(conversation=c, role=role, content=corpus.text(300 if role == "user" else 1500))
        for c in made
        for role in ("user", "assistant")
    )
    last = dict(Message.objects.filter(conversation__owner=user).values_list("conversation_id", "pk"))
    vectors = rng.standard_normal((conversations, dimensions)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ConversationVector.objects.bulk_create(
        ConversationVector(
            conversation=c, last_message_id=last[c.pk], model=EMBEDDINGS_MODEL, embedding=v.tobytes()
        )
        for c, v in zip(made, vectors, strict=True)
    )
    words = [corpus.question(corpus.text(300)) for _ in range(queries)]
    results = {}
    for embeddings in (False, True):
        settings.ASSISTANT_EMBEDDINGS_MODEL = EMBEDDINGS_MODEL if embeddings else ""
        for word in words[:3]:
            selectors.conversations_list(user=user, query=word, archived=None)
        times = [
            timed(lambda w=w: selectors.conversations_list(user=user, query=w, archived=None))[0]
            for w in words
        ]
        results["by meaning and full text" if embeddings else "full text"] = {
            "embeddings": embeddings,
            "conversations": conversations,
            **percentiles(times),
        }
    return results


# --------------------------------------------------------------------------- 3. TTFT


async def first_token_ms(headers: dict[str, str], port: int, conversation: dict, question: str) -> float:
    """From sending a question in `conversation` to its first delta event."""

    started = time.monotonic_ns()
    sent = await request_json(
        HOST,
        port,
        "POST",
        f"/api/conversations/{conversation['id']}/messages/",
        202,
        {"content": question},
        headers,
    )
    answer = sent["assistant_message"]
    response = await request(
        HOST, port, "GET", conversation["events_url"], {**headers, "Last-Event-ID": answer["last_event_id"]}
    )
    try:
        async for event in sse_events(response):
            if event.event == "delta":
                return (event.received_ns - started) / 1e6
            if event.event in ("done", "error"):
                raise RuntimeError(f"the answer ended without text: {event.data}")
    finally:
        response.close()
    raise RuntimeError("the stream ended before the answer")


async def ttft_rounds(login, port: int, corpus: Corpus, rounds: int, owner_id: int, chunks: int, dims: int):
    """`rounds` questions with a large document and as many without, alternating."""
    from asgiref.sync import sync_to_async

    question = 'Was regelt der Vertrag zur Kündigung? FAKE{"tokens": 3}'
    with_document, without = [], []
    for _ in range(rounds + 2):
        plain = await request_json(
            HOST, port, "POST", "/api/conversations/", 201, {"model": MODEL, "title": "b"}, login
        )
        documented = await request_json(
            HOST, port, "POST", "/api/conversations/", 201, {"model": MODEL, "title": "b"}, login
        )
        await sync_to_async(user_document)(corpus, documented["id"], owner_id, chunks, dims)
        without.append(await first_token_ms(login, port, plain, question))
        with_document.append(await first_token_ms(login, port, documented, question))
    # The first two of each warm the server up (imports, connections, caches).
    return with_document[2:], without[2:]


def ttft(
    env: dict[str, str], login, corpus: Corpus, rounds: int, embeddings: bool, chunks: int, dims: int
) -> dict:
    from django.contrib.auth import get_user_model

    owner_id = get_user_model().objects.get(username="bench0").pk
    extra = {"ASSISTANT_EMBEDDINGS_MODEL": EMBEDDINGS_MODEL if embeddings else ""}
    log = ARTIFACTS / f"bench-documents-daphne-{'hybrid' if embeddings else 'fulltext'}.log"
    from bench.run import daphne_command, serve

    with serve(daphne_command, {**env, **extra}, log) as (server, _process):
        asyncio.run(wait_for(server.port))
        with_document, without = asyncio.run(
            ttft_rounds(login, server.port, corpus, rounds, owner_id, chunks, dims)
        )
    added = [a - b for a, b in zip(with_document, without, strict=True)]
    return {
        "embeddings": embeddings,
        "document_chunks": chunks,
        "without_document_ms": percentiles(without),
        "with_document_ms": percentiles(with_document),
        "added_ms": {"p50": round(statistics.median(with_document) - statistics.median(without), 1)},
        "added_pairwise_ms": percentiles(added),
    }


async def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            response = await request(HOST, port, "GET", "/accounts/login/")
            response.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError("daphne did not start")


# --------------------------------------------------------------------------- the run


def table(figures: dict) -> str:
    lines = ["", "Ingestion (generated text PDFs, one reader)", "  pages  seconds  pages/s  embeddings"]
    for row in figures["ingestion"]:
        lines.append(
            f"  {row['pages']:5d}  {row['seconds']:7.1f}  {row['pages_per_second']:7.1f}  {row['embeddings']}"
        )
    lines += ["", f"Retrieval, {figures['chunks']:,} chunks in the database (ms; target p95 <= 50)"]
    lines.append(f"  {'':46} {'p50':>7} {'p95':>7} {'max':>7}  {'CPU p50':>7} {'CPU p95':>7}  found")
    for name, row in figures["retrieval"].items():
        found = f"  {row['found_share']:.0%}" if "found_share" in row else ""
        cpu = f"  {row['cpu']['p50']:7.1f} {row['cpu']['p95']:7.1f}" if "cpu" in row else " " * 17
        lines.append(f"  {name:46} {row['p50']:7.1f} {row['p95']:7.1f} {row['max']:7.1f}{cpu}{found}")
    lines += ["", "Sidebar search over one user's conversations (ms)"]
    for name, row in figures.get("conversation_search", {}).items():
        lines.append(
            f"  {name:26} {row['conversations']:5d} conversations"
            f"  p50 {row['p50']:6.1f}  p95 {row['p95']:6.1f}"
        )
    lines += ["", "Time to first token through daphne (ms; target: added p50 <= 100)"]
    for row in figures["ttft"]:
        kind = "hybrid" if row["embeddings"] else "full text"
        without, with_document = row["without_document_ms"]["p50"], row["with_document_ms"]["p50"]
        lines.append(
            f"  {kind:9}  without document p50 {without:6.1f}  with p50 {with_document:6.1f}"
            f"  added p50 {row['added_ms']['p50']:6.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.documents", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="passages in the collection")
    parser.add_argument("--queries", type=int, default=300, help="questions per retrieval scenario")
    parser.add_argument(
        "--dimensions", type=int, default=1536, help="vector dimensions (text-embedding-3-small's)"
    )
    parser.add_argument("--ingest-documents", type=int, default=10, help="PDFs read per ingestion run")
    parser.add_argument("--ingest-pages", type=int, default=20, help="pages per PDF")
    parser.add_argument("--ttft-rounds", type=int, default=30, help="questions with and without a document")
    parser.add_argument(
        "--document-chunks", type=int, default=300, help="passages of the conversation's document"
    )
    parser.add_argument("--conversations", type=int, default=2000, help="a user's conversations searched")
    parser.add_argument("--json", type=Path, default=ARTIFACTS / "bench-documents.json")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def environment(folder: Path, upstream_url: str) -> dict[str, str]:
    """bench.run.server_env's production settings (DEBUG off: no query log growing with
    100,000 inserts) on this run's database, for this process, daphne and bench.prepare."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ASSISTANT_", "DJANGO_", "DATABASE_"))
    }
    return {
        **kept,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_STATIC_ROOT": str(folder / "static"),
        "DJANGO_MEDIA_ROOT": str(folder / "media"),
        "DATABASE_URL": f"sqlite:///{folder / 'bench.sqlite3'}",
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MAX_RETRIES": "0",
        "ASSISTANT_MODELS": MODEL,
        # Two questions per round, sixty rounds: more than a person asks in a minute.
        "ASSISTANT_RATE_LIMIT_PER_MINUTE": "0",
        "ASSISTANT_WRITES_PER_MINUTE": "100000",
        "ASSISTANT_CONVERSATIONS_PER_MINUTE": "100000",
        "PYTHONUNBUFFERED": "1",
    }


def prepared(env: dict[str, str]) -> dict[str, str]:
    """bench.prepare (migrate, collect static files, log bench0 in) on this run's database:
    the headers of bench0's requests."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.prepare", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"bench.prepare failed:\n{done.stderr}")
    login = json.loads(done.stdout)[0]
    return {"Cookie": login["cookie"], "X-CSRFToken": login["csrf"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ARTIFACTS.mkdir(exist_ok=True)
    corpus = Corpus()
    with tempfile.TemporaryDirectory(prefix="bench-documents-") as workdir:
        folder = Path(workdir)
        port = free_port()
        env = environment(folder, f"http://{HOST}:{port}/v1")
        os.environ.update(env)
        login = prepared(env)
        from bench.run import fake_upstream  # sets Django up: on this database

        switches = ("--port", str(port), "--embedding-dimensions", str(args.dimensions))
        with fake_upstream(ARTIFACTS / "bench-documents-upstream.log", *switches):
            figures = measure(args, corpus, env, login)
    args.json.write_text(json.dumps(figures, indent=2))
    print(table(figures))
    print(f"\nfull results: {args.json}")
    return 0


def measure(args: argparse.Namespace, corpus: Corpus, env: dict[str, str], login) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from assistant.documents.models import Chunk
    from assistant.models import Conversation

    assert settings.DATABASES["default"]["NAME"] == env["DATABASE_URL"].removeprefix("sqlite:///")
    print(f"filling {args.chunks:,} chunks ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    collection, targets = fill(corpus, args.chunks, args.dimensions)
    print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    figures: dict = {"chunks": args.chunks, "dimensions": args.dimensions, "load_average": os.getloadavg()}
    print("ingestion ...", file=sys.stderr, flush=True)
    figures["ingestion"] = [
        ingestion(corpus, args.ingest_documents, args.ingest_pages, embeddings=False),
        ingestion(corpus, args.ingest_documents, args.ingest_pages, embeddings=True),
    ]
    owner = get_user_model().objects.get(username="bench0")

    def document(chunks: int):
        conversation = Conversation.objects.create(owner=owner, model=MODEL)
        return user_document(corpus, conversation.pk, owner.pk, chunks, args.dimensions)

    one = document(args.document_chunks)
    many = [document(300) for _ in range(10)]
    small = {
        "collection_chunks": args.chunks,
        "one": one.pk,
        "one_chunks": args.document_chunks,
        "many": [d.pk for d in many],
        "many_chunks": Chunk.objects.filter(document__in=many).count(),
    }
    print("retrieval ...", file=sys.stderr, flush=True)
    figures["retrieval"] = retrieval(corpus, collection, targets, args.queries, small)
    args.json.write_text(json.dumps(figures, indent=2))  # so far, should the rest fail
    print("conversation search ...", file=sys.stderr, flush=True)
    figures["conversation_search"] = conversation_search(corpus, args.conversations, 100, args.dimensions)
    args.json.write_text(json.dumps(figures, indent=2))  # so far, should the rest fail
    print("time to first token ...", file=sys.stderr, flush=True)
    figures["ttft"] = [
        ttft(env, login, corpus, args.ttft_rounds, embeddings, args.document_chunks, args.dimensions)
        for embeddings in (False, True)
    ]
    figures["load_average_after"] = os.getloadavg()
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
