"""Benchmark: letters to PDF, one document per letter vs batches laid out as one document.

Renders N personalised letters (a letter template wrapping campaign content, through
``renderers.templating``) three ways, each in a fresh process so peak RSS is its own:

- ``weasyprint``: plain ``HTML(string=...).write_pdf()`` per letter, the baseline;
- ``single``: ``renderers.pdf.render_pdf`` per letter (fetcher, base CSS, reused fonts);
- ``batched``: ``renderers.pdf.render_pdfs`` on chunks of ``--batch`` letters (the fast path);

then zips the batched PDFs with ``renderers.zipstream.write_zip`` (deflate level 1, as shipped)
and with zipfile's stored and level-6 options for comparison. Prints wall and CPU ms per letter,
peak RSS, whether ``libharfbuzz-subset0`` is installed, and the command to reproduce:

    .venv/bin/python benchmarks/letter_render.py --letters 500
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from pypdf import PdfReader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST = ["Søren", "Zoë", "Hélène", "Åse", "Noël", "José", "Ørjan", "Björn", "Anna", "Freja"]
LAST = ["Østergaard", "Brontë", "Lefèvre", "Ødegård", "Jensen", "Müller", "García", "Sørensen"]
TEMPLATE = """<!doctype html><html lang="da"><head><meta charset="utf-8">
<title>{{ campaign.name }}</title><style>
@page { margin: 20mm 20mm 25mm 25mm;
  @bottom-center { content: "ACME A/S · Hovedgaden 1 · 2100 København Ø"; font-size: 8pt } }
body { font-size: 10.5pt }
.sender { text-align: right; font-size: 9pt; color: #444; margin-bottom: 12mm }
.address { height: 35mm; margin-bottom: 10mm } .address p { margin: 0 }
.date { text-align: right; margin-bottom: 8mm } h1 { font-size: 14pt; margin: 0 0 6mm }
table.items { width: 100%; border-collapse: collapse; margin: 6mm 0 }
table.items th, table.items td { border-bottom: 0.5pt solid #999; padding: 1.5mm 2mm;
  text-align: left }
table.items td.amount { text-align: right } .signature { margin-top: 12mm }
.muted { color: #666; font-size: 9pt } strong { font-weight: bold } a { color: #036 }
</style></head><body>
<div class="sender">ACME A/S<br>Hovedgaden 1<br>2100 København Ø</div>
<div class="address"><p>{{ contact.first_name }} {{ contact.last_name }}</p>
<p>{{ contact.address }}</p>
<p>{{ contact.zip_code }} {{ contact.city }}</p></div>
<div class="date">København, 1. marts 2025</div>
{{ content }}
<div class="signature">Med venlig hilsen<br><br>{{ sender.first_name }} {{ sender.last_name }}<br>
<span class="muted">{{ sender.job_title }}</span></div></body></html>"""
CONTENT = """<h1>Your spring offer, {{ contact.first_name }}</h1>
<p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>
<p>Thank you for being a customer in {{ contact.city }}. Lorem ipsum dolor sit amet, consectetur
adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim
veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.</p>
<table class="items"><tr><th>Item</th><th>Price</th></tr>
{% for n in range(1, 5) %}
<tr><td>Product {{ n }}</td><td class="amount">{{ n * 125 }} kr</td></tr>{% endfor %}
</table>
<p>Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla
pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt.</p>"""

# A lighter letter: the same sender, address, date and signature around a greeting and three
# paragraphs; no table, no page footer. WeasyPrint lays it out in about half the time of the one above.
SHORT_TEMPLATE = TEMPLATE.replace(
    '\n  @bottom-center { content: "ACME A/S · Hovedgaden 1 · 2100 København Ø"; font-size: 8pt } }', " }")
SHORT_CONTENT = """<h1>Your spring offer, {{ contact.first_name }}</h1>
<p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>
<p>Thank you for being a customer in {{ contact.city }}. Lorem ipsum dolor sit amet, consectetur
adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>
<p>Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla
pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt.</p>"""
LETTERS = {"invoice": (TEMPLATE, CONTENT), "short": (SHORT_TEMPLATE, SHORT_CONTENT)}
"""The benchmark letters by name: (letter template, campaign content). ``invoice`` is the default."""


def letters(count: int, css_rules: int = 0, kind: str = "invoice") -> list[str]:
    """``count`` letters rendered through the campaign templating, names with Ø ë é; the
    template's stylesheet gets ``css_rules`` more rules, as a CSS framework would add."""
    from renderers.templating import compile_campaign

    extra = "\n".join(f".u{n} {{ margin: {n % 5}mm; color: #{n:06x} }} .box{n} td + td, "
                      f".box{n} > p {{ padding: {n % 3}mm }}" for n in range(css_rules // 2))
    template, content = LETTERS[kind]
    compiled = compile_campaign(None, content, template.replace("</style>", extra + "</style>"))
    sender = {"first_name": "Doe", "last_name": "John", "job_title": "Sales manager"}
    out = []
    for n in range(count):
        contact = {"first_name": FIRST[n % len(FIRST)], "last_name": LAST[n % len(LAST)],
                   "address": f"Vesterbrogade {n % 200 + 1}", "zip_code": "1620",
                   "city": "København V"}
        context = {"contact": contact, "sender": sender, "campaign": {"name": "Spring letter"}}
        out.append(compiled.render(context, footer=False).html)
    return out


def measure(mode: str, count: int, batch: int, css_rules: int, kind: str = "invoice") -> dict:
    """Run one mode in this process; the parent starts one process per mode."""
    from renderers import pdf, pdf_hooks, zipstream

    pdf_hooks.install()  # as the workers do (WEASYPRINT_HOOKS on)
    htmls = letters(count, css_rules, kind)
    if mode == "weasyprint":
        from weasyprint import HTML

        def run(chunk: list[str]) -> list[bytes]:
            return [HTML(string=html).write_pdf() for html in chunk]
    elif mode == "single":
        def run(chunk: list[str]) -> list[bytes]:
            return [pdf.render_pdf(html) for html in chunk]
    else:
        def run(chunk: list[str]) -> list[bytes]:
            return pdf.render_pdfs(chunk)
    run(htmls[:2])  # warm up: imports, fonts, the base stylesheet
    wall, cpu = time.perf_counter(), time.process_time()
    pdfs = []
    for start in range(0, count, batch):
        pdfs.extend(run(htmls[start:start + batch]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = {"mode": mode, "wall_ms": wall / count * 1000, "cpu_ms": cpu / count * 1000,
              "pages": sum(len(PdfReader(io.BytesIO(p)).pages) for p in pdfs),
              "merged": mode == "batched" and pdf.render_batch(htmls[:batch]) is not None,
              "pdf_bytes": sum(map(len, pdfs)), "rss_mb": _peak_rss_mb()}
    if mode == "batched":
        result["zip"] = _zip_costs(pdfs, zipstream)
    return result


def _zip_costs(pdfs: list[bytes], zipstream) -> dict:
    costs = {}
    used: set[bytes] = set()
    names = [zipstream.safe_entry_name(f"c{n}", "Zoë Brontë", used) for n in range(len(pdfs))]
    for label, method, level in (("stored", zipfile.ZIP_STORED, None),
                                 ("deflate-6", zipfile.ZIP_DEFLATED, 6)):
        target, cpu = io.BytesIO(), time.process_time()
        with zipfile.ZipFile(target, "w", compression=method, compresslevel=level) as archive:
            for name, data in zip(names, pdfs):
                archive.writestr(name, data)
        costs[label] = (len(target.getvalue()), (time.process_time() - cpu) / len(pdfs) * 1000)
    target, cpu = io.BytesIO(), time.process_time()
    zipstream.write_zip(target, zip(names, pdfs))
    costs["write_zip (deflate-1)"] = (len(target.getvalue()),
                                      (time.process_time() - cpu) / len(pdfs) * 1000)
    return costs


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def harfbuzz_subset() -> bool:
    """Is Debian's libharfbuzz-subset0 there? Without it WeasyPrint subsets fonts in Python."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    return "harfbuzz-subset" in listing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50, help="letters per render_pdfs call")
    parser.add_argument("--letter", choices=sorted(LETTERS), default="invoice",
                        help="invoice: with an item table and a page footer; short: three paragraphs")
    parser.add_argument("--css-rules", type=int, default=0,
                        help="rules added to the template's stylesheet (it has 13)")
    parser.add_argument("--mode", choices=["weasyprint", "single", "batched"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.letters, args.batch, args.css_rules, args.letter)))
        return
    print(f"command: .venv/bin/python benchmarks/letter_render.py --letters {args.letters} "
          f"--batch {args.batch} --css-rules {args.css_rules} --letter {args.letter}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs (wall time suffers from other load, CPU time less)")
    print(f"libharfbuzz-subset0 installed: {'yes' if harfbuzz_subset() else 'NO (slow fontTools)'}")
    for mode in ("weasyprint", "single", "batched"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--letters",
                              str(args.letters), "--batch", str(args.batch),
                              "--css-rules", str(args.css_rules), "--letter", args.letter],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        merged = " (merged into one document per batch)" if r["merged"] else ""
        print(f"{mode:>10}: {r['wall_ms']:6.1f} ms/letter wall, {r['cpu_ms']:6.1f} ms/letter CPU, "
              f"peak RSS {r['rss_mb']:5.0f} MB, {r['pages']} pages, "
              f"{r['pdf_bytes'] / args.letters / 1024:.1f} KB/letter{merged}")
        for label, (size, ms) in r.get("zip", {}).items():
            print(f"{'':>12}zip {label}: {size / 1024:.0f} KB "
                  f"({size / r['pdf_bytes'] * 100:.1f}% of the PDFs), {ms:.3f} ms/letter CPU")


if __name__ == "__main__":
    main()
