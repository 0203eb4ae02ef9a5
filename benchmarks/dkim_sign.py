"""Benchmark: ``renderers.dkim.DkimSigner.sign`` per message, RSA-2048 and Ed25519, against the key operation alone.

Builds N of the project's real newsletter emails (``benchmarks.smtp_client.messages``: the email
benchmark's newsletter rendered and built for distinct contacts, about 3 KB each, From
news@acme.example), makes a throwaway RSA-2048 key and a throwaway Ed25519 key for acme.example in
a temporary directory, one directory per key, named as ``load_keys`` expects
(``bench.acme.example.pem``, PKCS#8, and ``bench.acme.example.ed25519``, the base64 seed), and times,
in one process, ``--runs`` times in turn:

- ``sign``: ``signer.sign(message, "acme.example", crlf=True)`` for each of the N messages, as the
  workers call it (the From domain given, the line ends vouched for), for each algorithm;
- ``key op``: the bare private-key operation N times on a SHA-256 digest (RSA PKCS#1 v1.5 of the
  prehashed digest; Ed25519 of the digest's 32 bytes), which is what ``sign`` cannot avoid: the
  rest of ``sign`` is parsing, canonicalisation, the two hashes and the header;
- ``no key op``: ``sign`` with a stand-in key whose ``sign`` returns 64 fixed bytes at once, that
  rest measured directly (less noisy than ``sign`` minus ``key op`` on a busy machine).

``--indented`` indents the HTML lines of every message by two spaces, as an indented template's
would be: the body then needs relaxed canonicalisation's whitespace rewrites, which the plain
newsletter (quoted-printable, no double spaces) skips.

``--baseline FILE`` also times another version of ``renderers/dkim.py`` loaded from FILE, in turn
with the current one in every run (so both see the same machine load), e.g. the committed one:

    git show HEAD:renderers/dkim.py > /tmp/dkim_head.py

Before timing, the first messages signed by each version are checked with dkimpy's ``dkim.verify``
against the keys' public halves. Prints the process CPU microseconds a message of each run, the
medians, sign minus the key operation, and the command to reproduce them. Exit status 0, 1 when a
signature did not verify.

    .venv/bin/python benchmarks/dkim_sign.py                           # 2,000 messages, 5 runs
    .venv/bin/python benchmarks/dkim_sign.py --baseline /tmp/dkim_head.py --runs 9
    .venv/bin/python benchmarks/dkim_sign.py --baseline /tmp/dkim_head.py --indented
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed  # noqa: E402

from benchmarks.harness import reproduce_command  # noqa: E402
from benchmarks.smtp_client import messages  # noqa: E402
from tests.dkimkeys import StubDns, write_ed25519_key, write_rsa_key  # noqa: E402

DOMAIN = "acme.example"  # benchmarks.smtp_client.SENDER's domain
SELECTOR = "bench"
ALGORITHMS = ("rsa", "ed25519")


def write_keys(folder: Path) -> dict[str, tuple[Path, StubDns]]:
    """One directory per algorithm under ``folder``, each with one fresh key for DOMAIN:
    {algorithm: (directory, a DNS that publishes its public half)}."""
    made = {}
    for algorithm, write in (("rsa", write_rsa_key), ("ed25519", write_ed25519_key)):
        (folder / algorithm).mkdir(mode=0o700)
        dns = StubDns()
        write(folder / algorithm, SELECTOR, DOMAIN, dns)
        made[algorithm] = (folder / algorithm, dns)
    return made


def load_module(path: Path, name: str) -> ModuleType:
    """A version of renderers/dkim.py loaded from ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def cpu_us_per_item(run: Callable[[], object], count: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) * 1e6 / count


def key_op(signer, count: int) -> Callable[[], object]:
    """``count`` bare private-key operations of ``signer``'s one key, on distinct SHA-256 digests."""
    [key] = signer.keys
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(count)]
    private = key.private
    if isinstance(private, rsa.RSAPrivateKey):
        pad, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())
        return lambda: [private.sign(d, pad, prehashed) for d in digests]
    return lambda: [private.sign(d) for d in digests]


class StandInKey:
    """A private key whose ``sign`` returns 64 fixed bytes at once: ``sign`` with it costs everything
    but the key operation (it takes the Ed25519 path of either version)."""

    def sign(self, data: bytes, *options: object) -> bytes:
        return bytes(64)


def indent(message: bytes) -> bytes:
    """``message`` with its HTML lines indented by two spaces, as an indented template's would be:
    the relaxed body then differs from the body (two spaces in a row), so its whitespace rewrites run."""
    head, blank, body = message.partition(b"\r\n\r\n")
    return head + blank + body.replace(b"\r\n<", b"\r\n  <")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages signed per run (default 2,000)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the medians are reported (default 5)")
    parser.add_argument("--baseline", type=Path, help="another renderers/dkim.py to time in turn with the current one")
    parser.add_argument("--indented", action="store_true",
                        help="indent the HTML lines of every message by two spaces (see indent())")
    args = parser.parse_args()

    import renderers.dkim as current

    versions = {"current": current}
    if args.baseline:
        versions = {"baseline": load_module(args.baseline.resolve(), "dkim_baseline"), **versions}
    items = [data for _rcpt, data in messages(args.messages)]
    if args.indented:
        items = [indent(data) for data in items]
    print(f"{len(items)} messages, {statistics.mean(map(len, items)):.0f} bytes on average, "
          f"{args.runs} runs, versions: {', '.join(versions)}")

    with tempfile.TemporaryDirectory(prefix="dkim-bench-") as tmp:
        keys = write_keys(Path(tmp))
        signers = {(version, algo): module.load_keys(keys[algo][0])
                   for version, module in versions.items() for algo in ALGORITHMS}

        ok = True
        for (version, algo), signer in signers.items():  # every version's signatures must verify
            for data in items[:20]:
                if not dkim.verify(signer.sign(data, DOMAIN), dnsfunc=keys[algo][1]):
                    print(f"{version} {algo}: a signature did NOT verify", file=sys.stderr)
                    ok = False
                    break

        def signing(signer) -> Callable[[], object]:
            # as the workers call it: the messages are built CRLF-only (a version before ``crlf``: without)
            if "crlf" in inspect.signature(signer.sign).parameters:
                return lambda: [signer.sign(data, DOMAIN, crlf=True) for data in items]
            return lambda: [signer.sign(data, DOMAIN) for data in items]

        # In each run, in this order: each algorithm's versions in turn, then its bare key operation;
        # then each version with the stand-in key.
        timed: list[tuple[str, Callable[[], object]]] = []
        for algo in ALGORITHMS:
            timed += [(f"{algo} sign ({version})", signing(signers[version, algo])) for version in versions]
            timed.append((f"{algo} key op", key_op(signers["current", algo], len(items))))
        for version, module in versions.items():
            stand_in = module.DkimSigner([dataclasses.replace(key, private=StandInKey())
                                          for key in signers[version, "ed25519"].keys])
            timed.append((f"no key op ({version})", signing(stand_in)))

        timings: dict[str, list[float]] = {label: [] for label, _run in timed}
        for run in range(args.runs):
            for label, work in timed:
                timings[label].append(cpu_us_per_item(work, len(items)))
            done = ", ".join(f"{label} {values[-1]:.1f}" for label, values in timings.items())
            print(f"run {run + 1}: {done} us")

    print("\nmedians, process CPU microseconds a message:")
    medians = {label: statistics.median(values) for label, values in timings.items()}
    for label, value in medians.items():
        print(f"  {label:<28} {value:8.1f}   (min {min(timings[label]):.1f}, max {max(timings[label]):.1f})")
    for algo in ALGORITHMS:
        for version in versions:
            rest = medians[f"{algo} sign ({version})"] - medians[f"{algo} key op"]
            print(f"  {algo} sign ({version}) minus the {algo} key op: {rest:.1f}")
    options = [f"--messages {args.messages}", f"--runs {args.runs}"]
    if args.baseline:
        options.append(f"--baseline {args.baseline}")
    if args.indented:
        options.append("--indented")
    print("\nreproduce: " + reproduce_command("dkim_sign.py", options))
    if not ok:
        print("a signature did not verify", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
