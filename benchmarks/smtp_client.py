"""Benchmark: the SMTP client alone, aiosmtplib's ``sendmail`` against the project's pool.

Sends N ready-made messages (the email benchmark's newsletter, built by the project for distinct
contacts, so about 5 KB each) to Postfix's smtp-sink over C connections, one process, one event
loop, two ways, alternating ``--runs`` times:

- ``sendmail``: bare aiosmtplib, C clients each sending its share in turn (the email benchmark's
  raw baseline);
- ``pool``: ``worker.channels.smtp.SmtpPool`` of C connections, N sends gathered at once (the
  pool's slots keep C on the wire), as ``SmtpSender`` runs them: the mail transaction pipelined
  (``worker.channels.smtp_channel``) when the sink offers PIPELINING, which it does.
  ``--no-pipelining`` starts smtp-sink with ``-p`` so the pool sends one command at a time.

``--latency-ms L`` puts a relay far away: a TCP proxy (a thread of this process) between the
clients and the sink holds everything L/2 ms each way, so each round trip takes L ms more. There
throughput is what counts (round trips a message); the CPU figures then include the proxy's.

Prints msg/s and the process's CPU milliseconds a message for each run, the medians, and the command
to reproduce them. Checks that the sink counted every message. Exit status 0, 1 when a count was
wrong, 2 when smtp-sink is missing and cannot be installed.

    .venv/bin/python benchmarks/smtp_client.py                  # 20,000 messages, 10 connections, 3 runs
    .venv/bin/python benchmarks/smtp_client.py --no-pipelining
    .venv/bin/python benchmarks/smtp_client.py --latency-ms 20 --messages 2000 --connections 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402

from benchmarks.harness import Sink, ensure_smtp_sink, reproduce_command  # noqa: E402
from renderers.mime import EmailFrame, stable_message_id  # noqa: E402
from renderers.templating import compile_campaign  # noqa: E402
from worker.channels.smtp import SmtpConfig, SmtpPool  # noqa: E402

SENDER = "news@acme.example"


def messages(count: int, distinct: int = 2000) -> list[tuple[str, bytes]]:
    """``count`` (recipient, message) pairs cycling over ``distinct`` rendered newsletters."""
    from benchmarks.email_campaign import CONTENT, FIRST, WRAPPER

    compiled = compile_campaign("{{ contact.first_name }}, spring is here", CONTENT, WRAPPER)
    frame = EmailFrame(from_addr=SENDER)
    made = []
    for i in range(min(count, distinct)):
        rcpt = f"person{i}@example.com"
        contact = {"id": str(i), "first_name": FIRST[i % len(FIRST)], "city": "Aarhus",
                   "custom_fields": {"tier": "gold" if i % 3 == 0 else "silver", "member": f"M{i:08d}"}}
        context = {"contact": contact, "sender": {"first_name": "Ann", "last_name": "Lee", "phone_number": "+45"},
                   "campaign": {"id": "c", "name": "Spring news"},
                   "unsubscribe_url": f"https://acme.example/unsub?contact={i}"}
        rendered = compiled.render(context)
        made.append((rcpt, frame.build(to_addr=rcpt, subject=rendered.subject, html=rendered.html,
                                       text=rendered.text, message_id=stable_message_id("c", str(i), "acme.example"))))
    return [made[i % len(made)] for i in range(count)]


async def by_sendmail(port: int, items: list[tuple[str, bytes]], connections: int) -> None:
    async def client(share: list[tuple[str, bytes]]) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await smtp.connect()
        for rcpt, data in share:
            await smtp.sendmail(SENDER, [rcpt], data)
        await smtp.quit()

    await asyncio.gather(*(client(items[k::connections]) for k in range(connections)))


async def by_pool(port: int, items: list[tuple[str, bytes]], connections: int) -> None:
    pool = SmtpPool(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"), size=connections)
    try:
        await asyncio.gather(*(pool.send(SENDER, [rcpt], data) for rcpt, data in items))
    finally:
        await pool.close()


class DelayingProxy:
    """A TCP proxy on 127.0.0.1 that forwards each chunk ``delay`` seconds after it came, each way,
    in order: a relay ``2 * delay`` seconds away, round trip. Runs its own event loop thread."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def forward() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
            writer.close()

        forwarding = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, data))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        await forwarding

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pipelining", action="store_true",
                        help="smtp-sink -p: the pool sends one command at a time")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="a proxy adds this much to every round trip (a relay far away)")
    args = parser.parse_args()
    binary = ensure_smtp_sink()  # exits 2 when it is missing and cannot be installed
    items = messages(args.messages)
    sink = Sink(binary, ["-p"] if args.no_pipelining else [])
    proxy = DelayingProxy(sink.port, args.latency_ms / 2000) if args.latency_ms else None
    port = proxy.port if proxy else sink.port
    figures: dict[str, list[tuple[float, float]]] = {"sendmail": [], "pool": []}
    ok = True
    try:
        for run in range(args.runs):
            for name, way in (("sendmail", by_sendmail), ("pool", by_pool)):
                before = sink.count(settle=0.05)
                cpu, wall = time.process_time(), time.perf_counter()
                asyncio.run(way(port, items, args.connections))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                got = sink.count(settle=0.05) - before
                ok &= got == len(items)
                figures[name].append((len(items) / wall, cpu / len(items) * 1000))
                print(f"run {run + 1} {name:8}: {len(items) / wall:7.0f} msg/s, {cpu / len(items) * 1000:.3f} ms CPU "
                      f"a message; sink counted {got}")
    finally:
        if proxy:
            proxy.stop()
        sink.stop()
    print(f"\n== SMTP client, {args.messages} messages of ~{sum(len(d) for _, d in items) // len(items)} bytes, "
          f"{args.connections} connections, smtp-sink {'without' if args.no_pipelining else 'with'} PIPELINING"
          + (f", {args.latency_ms:g} ms more a round trip (CPU includes the proxy's)" if proxy else ""))
    for name, runs in figures.items():
        print(f"{name:8}: median {statistics.median(r for r, _ in runs):.0f} msg/s, "
              f"{statistics.median(c for _, c in runs):.3f} ms CPU a message")
    options = [f"--messages {args.messages}", f"--connections {args.connections}", f"--runs {args.runs}"]
    if args.latency_ms:
        options.append(f"--latency-ms {args.latency_ms:g}")
    print("reproduce:", reproduce_command("smtp_client.py",
                                          options + (["--no-pipelining"] if args.no_pipelining else [])))
    if not ok:
        print("a run's count at the sink was wrong", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
