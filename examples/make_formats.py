"""Write the handbook's PDF, Word, HTML, CSV and JSONL documents, byte for byte the same on every run.

    .venv/bin/python examples/make_formats.py [HANDBOOK_DIR]

Needs fpdf2 (a development dependency, for the PDFs) besides the product's own pypdf and
python-docx. Dates are fixed and archive entries carry a fixed timestamp, so a re-run changes no
file unless this script changed. Everything about Halden Precision Manufacturing is invented.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import docx
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from pypdf import PdfWriter

Block = tuple[str, object]
"""("h", text) heading, ("p", text) paragraph, ("ul", [items]) bullets, ("table", [[cells], ...])."""

_ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def write_pdf(path: Path, *, title: str, keywords: str, modified: datetime, pages: list[list[Block]]) -> None:
    """A PDF with one page per entry of `pages`, and /Title, /Keywords and /ModDate set."""
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_author("Halden Precision Manufacturing")
    pdf.set_keywords(keywords)
    pdf.set_creation_date(modified)
    pdf.set_auto_page_break(auto=True, margin=15)
    for number, blocks in enumerate(pages, start=1):
        pdf.add_page()
        if number == 1:
            pdf.set_font("Helvetica", style="B", size=18)
            pdf.multi_cell(0, 9, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(3)
        for kind, value in blocks:
            _pdf_block(pdf, kind, value)
        if pdf.page_no() != number:
            raise SystemExit(f"{path.name}: page {number} overflows; shorten it")
        pdf.set_auto_page_break(auto=False)  # the footer sits inside the bottom margin
        pdf.set_y(-14)
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 5, f"Halden Precision Manufacturing - {title} - page {number} of {len(pages)}")
        pdf.set_auto_page_break(auto=True, margin=15)
    writer = PdfWriter(clone_from=io.BytesIO(bytes(pdf.output())))
    writer.add_metadata({"/ModDate": modified.strftime("D:%Y%m%d%H%M%SZ")})
    with path.open("wb") as out:
        writer.write(out)


def _pdf_block(pdf: FPDF, kind: str, value: object) -> None:
    if kind == "h":
        pdf.ln(2)
        pdf.set_font("Helvetica", style="B", size=13)
        pdf.multi_cell(0, 7, str(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    elif kind == "p":
        pdf.set_font("Helvetica", size=10.5)
        pdf.multi_cell(0, 5.5, str(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1.5)
    elif kind == "ul":
        pdf.set_font("Helvetica", size=10.5)
        for item in value:  # type: ignore[attr-defined]
            pdf.multi_cell(0, 5.5, f"- {item}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1.5)
    elif kind == "table":
        pdf.set_font("Helvetica", size=10)
        widths = (35, 65) if len(value[0]) == 2 else None  # type: ignore[index]
        with pdf.table(line_height=5.5, col_widths=widths) as table:
            for cells in value:  # type: ignore[attr-defined]
                row = table.row()
                for cell in cells:
                    row.cell(cell)
        pdf.ln(2)


def write_docx(path: Path, *, title: str, keywords: str, modified: datetime, blocks: list[Block]) -> None:
    """A Word file: a Title paragraph, Heading 1/2 styles, bullets and grid tables."""
    document = docx.Document()
    document.add_heading(title, level=0)
    for kind, value in blocks:
        if kind in ("h", "h2"):
            document.add_heading(str(value), level=1 if kind == "h" else 2)
        elif kind == "p":
            document.add_paragraph(str(value))
        elif kind == "ul":
            for item in value:  # type: ignore[attr-defined]
                document.add_paragraph(str(item), style="List Bullet")
        elif kind == "table":
            rows: list[list[str]] = value  # type: ignore[assignment]
            table = document.add_table(rows=len(rows), cols=len(rows[0]), style="Table Grid")
            for cells, row in zip(rows, table.rows, strict=True):
                for text, cell in zip(cells, row.cells, strict=True):
                    cell.text = text
    props = document.core_properties
    props.title, props.keywords, props.author = title, keywords, "Halden Precision Manufacturing"
    props.created = props.modified = modified.replace(tzinfo=None)
    props.last_modified_by, props.revision = "Halden Precision Manufacturing", 1
    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(fixed_zip(buffer.getvalue()))


def fixed_zip(data: bytes) -> bytes:
    """The same archive with every entry's timestamp fixed, so that the bytes do not depend on the clock."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            target.writestr(
                zipfile.ZipInfo(entry.filename, _ZIP_TIME), source.read(entry), zipfile.ZIP_DEFLATED
            )
    return out.getvalue()


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(root: Path) -> None:
    for folder in ("finance", "facilities", "it", "hr", "contacts", "faq"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_pdf(
        root / "finance/travel-policy-quick-reference.pdf",
        title="Travel policy quick reference",
        keywords="finance, travel, expenses, quick reference",
        modified=datetime(2026, 6, 2, 9, 0, tzinfo=UTC),
        pages=TRAVEL_PAGES,
    )
    write_pdf(
        root / "facilities/workshop-safety-card.pdf",
        title="Workshop safety card",
        keywords="facilities, health-and-safety, workshop, ppe, emergency",
        modified=datetime(2026, 9, 7, 7, 30, tzinfo=UTC),
        pages=SAFETY_CARD,
    )
    write_docx(
        root / "it/it-equipment-return-checklist.docx",
        title="IT equipment return checklist",
        keywords="it, hardware, leaving, checklist",
        modified=datetime(2026, 9, 15, 10, 0, tzinfo=UTC),
        blocks=RETURN_CHECKLIST,
    )
    write_docx(
        root / "hr/works-council-meeting-rules.docx",
        title="Works council meeting rules",
        keywords="hr, works council, meetings, employee representation",
        modified=datetime(2026, 4, 20, 8, 0, tzinfo=UTC),
        blocks=WORKS_COUNCIL,
    )
    (root / "facilities/cafeteria-weekly-menu.html").write_text(CAFETERIA_HTML, encoding="utf-8")
    (root / "facilities/shuttle-bus-timetable.html").write_text(SHUTTLE_HTML, encoding="utf-8")
    write_csv(root / "contacts/department-phone-directory.csv", PHONE_DIRECTORY)
    write_jsonl(root / "faq/employee-faq.jsonl", FAQ)


# --- Content ------------------------------------------------------------------------------------------
# PDFs use the standard Helvetica font, which covers Latin-1 only: hence "-" for dashes and "EUR".

TRAVEL_PAGES: list[list[Block]] = [
    [
        (
            "p",
            "A one-page-per-topic summary of the travel and expense policy for travellers and managers. "
            "The full rules are in the handbook page 'Travel and expense reimbursement'; where the two "
            "differ, the full policy applies.",
        ),
        ("h", "Before you travel"),
        (
            "ul",
            [
                "Domestic trips: no separate approval; agree the trip with your manager.",
                "International trips: create a travel request in ExpenseFlow at least 10 working days before "
                "departure. Trips outside the EU also need your director's approval.",
                "Outside the EU: submit VPN form VPN-03 and check export control rules before carrying "
                "drawings.",
            ],
        ),
        ("h", "Booking"),
        (
            "p",
            "Book flights, trains, hotels and rental cars through the Halden Travel Desk (ext. 4330, "
            "travel@halden.example, Monday-Friday 08:00-17:00) or the online booking tool in ExpenseFlow. "
            "Bookings made elsewhere are reimbursed only if they were at least 10% cheaper than the "
            "Travel Desk price and you attach proof.",
        ),
        ("h", "Insurance and emergencies abroad"),
        (
            "p",
            "Halden's business travel insurance covers every business trip; you do not need private travel "
            "insurance. The insurance card and the 24/7 assistance number are in the ExpenseFlow app under "
            "Travel > Insurance. Lost passport, accident or medical emergency: call the assistance number "
            "first, then inform the Travel Desk and your manager.",
        ),
    ],
    [
        ("h", "Transport"),
        (
            "table",
            [
                ["Mode", "Rule"],
                ["Train", "2nd class; 1st class if the journey is longer than 3 hours one way"],
                ["Flights", "Economy; business class only for flights over 6 hours with director approval"],
                ["Rental car", "Compact category; mid-size for 3 or more travellers"],
                ["Private car", "EUR 0.30 per km, only if no pool car is available"],
                ["Taxi", "When public transport is not reasonable, e.g. arrival after 22:00"],
            ],
        ),
        ("h", "Hotels"),
        (
            "table",
            [
                ["Location", "Maximum per night, breakfast included"],
                ["Domestic, standard", "EUR 140"],
                ["Domestic, major cities and trade-fair weeks", "EUR 190"],
                ["International", "Country limits on the ExpenseFlow limits page"],
            ],
        ),
        (
            "p",
            "Not reimbursed: minibar, in-room films, upgrades paid personally, traffic and parking fines, "
            "and expenses of partners or family members.",
        ),
    ],
    [
        ("h", "Meals and per diems"),
        (
            "ul",
            [
                "More than 8 hours away: EUR 14. Full day (24 hours): EUR 28. Arrival and departure day: "
                "EUR 14 each.",
                "Deduct EUR 5.60 per breakfast and EUR 11.20 per lunch or dinner that was provided.",
                "Per diems replace meal receipts: do not claim restaurant receipts for your own meals.",
                "Customer hospitality: up to EUR 60 per person including drinks; list all attendees.",
            ],
        ),
        ("h", "Claiming in ExpenseFlow"),
        (
            "ul",
            [
                "Photograph receipts in the ExpenseFlow app as you go; receipts are needed above EUR 10.",
                "Submit the expense report within 30 days; claims older than 90 days are rejected.",
                "Your manager approves within 5 working days. Reports approved by the 20th are paid with "
                "that "
                "month's salary.",
                "Lost receipt: use the Missing receipt declaration, up to EUR 50 per report, three times a "
                "year.",
            ],
        ),
        ("h", "Contacts"),
        (
            "p",
            "Travel Desk: ext. 4330, travel@halden.example. Expense questions: Finance Shared Services, "
            "ext. 4345, expenses@halden.example.",
        ),
    ],
]

SAFETY_CARD: list[list[Block]] = [
    [
        (
            "p",
            "Keep this card at every workbench in Plant 1, Plant 2, the Brakmoor workshop and the Orrenfeld "
            "production hall. Everyone has the right and the duty to stop work that is unsafe.",
        ),
        ("h", "In an emergency"),
        (
            "ul",
            [
                "Call ext. 2222 (site emergency line, 24/7). From a mobile phone call 112, then inform "
                "ext. 2222.",
                "Say where (building, machine number), what happened and how many people are hurt.",
                "First aiders wear a green cross sticker on their helmet or badge holder.",
                "Evacuation alarm (continuous tone): leave by the nearest exit and go to your assembly "
                "point. "
                "Plant 1 and Plant 2: AP2 in the P3 car park.",
            ],
        ),
        ("h", "Before you start"),
        (
            "table",
            [
                ["Check", "What to do"],
                [
                    "PPE",
                    "Safety shoes S3, safety glasses; hearing protection in zones with the blue ear sign",
                ],
                ["Machine guards", "In place and working; never bridge an interlock"],
                ["Lockout/tagout", "Before maintenance or cleaning, lock the isolator with your own padlock"],
                [
                    "Hot work",
                    "Welding or grinding outside the workshop needs a work permit from EHS (24 h ahead)",
                ],
                ["Housekeeping", "Walkways clear; oil and coolant spills cleaned up at once"],
            ],
        ),
        ("h", "Report it"),
        (
            "p",
            "Report every accident, near miss and unsafe condition in SafeReport within 24 hours; the shift "
            "terminals have a SafeReport shortcut. Tell your shift lead immediately. EHS team: ext. 4700, "
            "ehs@halden.example. Occupational health: ext. 4710.",
        ),
    ],
]

RETURN_CHECKLIST: list[Block] = [
    (
        "p",
        "Use this checklist when you leave Halden, start a long absence (more than 6 months), or move to a "
        "role that needs different equipment. Your manager signs it off; IT Asset Management "
        "(itassets@halden.example) closes the record.",
    ),
    ("h", "When to return equipment"),
    (
        "ul",
        [
            "Leaving Halden: on your last working day, at the IT Hub (Building A, room A-014) or to your "
            "manager.",
            "Parental leave or sabbatical longer than 6 months: laptop and phone, by agreement with your "
            "manager.",
            "Role change: only the items the new role does not need; request a swap with form HW-02.",
        ],
    ),
    ("h", "Before you hand in"),
    (
        "ul",
        [
            "Move files from the laptop's local drive to OneVault or a team share; local files are wiped.",
            "Hand over shared mailboxes, team sites and licences you own to your manager.",
            "Remove private accounts and data from the company phone, then reset it to factory settings.",
            "Do not remove asset labels; IT checks the asset number against your record.",
        ],
    ),
    ("h", "Equipment checklist"),
    (
        "table",
        [
            ["Item", "Return to", "Notes"],
            ["Laptop (HX-14, HX-16 or HX-12) and charger", "IT Hub A-014", "Wiped and reissued after 5 days"],
            [
                "Docking station",
                "IT Hub A-014",
                "Leave it on the desk if a colleague takes over the workstation",
            ],
            ["Monitor, keyboard, mouse", "Stay at the desk", "Only return them if you took them home"],
            ["Headset", "IT Hub A-014", "Hygiene covers are replaced before reuse"],
            ["Company phone and SIM", "IT Hub A-014", "Port a private number out before your last day"],
            ["Hardware MFA token", "IT Hub A-014", "Only if IT issued one instead of Halden Verify"],
            [
                "Employee badge",
                "Reception Building A",
                "The badge wallet balance is paid out with your final salary",
            ],
        ],
    ),
    ("h", "After the return"),
    (
        "p",
        "IT emails you and your manager a return confirmation listing every asset. Items that are not "
        "returned within 10 working days are reported to HR and may be deducted from the final salary at "
        "their residual value. Questions: IT Service Desk, ext. 4410, servicedesk@halden.example.",
    ),
]

WORKS_COUNCIL: list[Block] = [
    (
        "p",
        "These rules govern meetings between the Works Council and Halden management, and how employees "
        "take part in works assemblies and consultation hours. They were agreed in the works agreement "
        "'Cooperation 2026' and apply at Vessberg HQ, Orrenfeld Valve Works and Brakmoor Service Centre.",
    ),
    ("h", "Meeting types"),
    (
        "table",
        [
            ["Meeting", "Frequency", "Who attends"],
            [
                "Monthly joint meeting",
                "First Wednesday of the month, 09:00",
                "Works Council committee, HR director, site managers",
            ],
            ["Works Council plenary", "Every second Tuesday", "Works Council members only"],
            [
                "Works assembly",
                "Once a quarter",
                "All employees of the site; management reports on the business",
            ],
            ["Economic committee", "Quarterly", "Committee members and the CFO"],
        ],
    ),
    ("h", "Agenda and invitations"),
    ("h2", "Monthly joint meeting"),
    (
        "p",
        "Either side may put items on the agenda. The agenda and all papers are sent to the participants at "
        "least 7 calendar days before the meeting. Urgent items can be added with the agreement of both "
        "chairs.",
    ),
    ("h2", "Works assemblies"),
    (
        "p",
        "Works assemblies are announced on the intranet and the notice boards at least 2 weeks in advance. "
        "Time spent at a works assembly counts as working time; shift employees book it in the time "
        "recording system with code WA. Managers must release employees unless production safety requires "
        "otherwise.",
    ),
    ("h", "Conduct of meetings"),
    (
        "ul",
        [
            "Meetings are chaired alternately by the Works Council chair and the HR director.",
            "Decisions and commitments are recorded in minutes, which both chairs sign within 5 working "
            "days.",
            "Information marked confidential by management stays within the meeting's participants.",
            "Guests, for example experts, attend only with the agreement of both sides.",
        ],
    ),
    ("h", "Consultation hours for employees"),
    (
        "p",
        "Works Council members hold consultation hours every Tuesday 10:00-12:00 in Building A, room A-120, "
        "and every Thursday 13:00-14:00 at the Orrenfeld admin building. Visits during working time need no "
        "approval; tell your manager that you are going. Contact: ext. 4250, works-council@halden.example.",
    ),
]

_INTRANET_TOP = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} – Halden intranet</title>
<meta name="keywords" content="{keywords}">
<meta name="kb-updated" content="{updated}">
<link rel="stylesheet" href="/static/intranet.css">
<script src="/static/intranet.js"></script>
</head>
<body>
<header class="site-header">
  <a class="logo" href="https://intranet.halden.example/">Halden intranet</a>
  <nav aria-label="Main">
    <a href="https://intranet.halden.example/peoplehub">PeopleHub</a>
    <a href="https://intranet.halden.example/workplace">Workplace</a>
    <a href="https://intranet.halden.example/servicedesk">IT Service Desk</a>
  </nav>
  <form class="search" action="https://intranet.halden.example/search"><input name="q"
    placeholder="Search the intranet"><button>Search</button></form>
</header>
<main id="content">
"""

_INTRANET_BOTTOM = """</main>
<aside class="related">
  <h2>Related pages</h2>
  <ul>{related}</ul>
</aside>
<footer class="site-footer">
  <p>Halden Precision Manufacturing · Werkstraße 12, 48231 Vessberg · Facilities Help Desk ext. 4500</p>
</footer>
<script>window.intranet && window.intranet.track("{slug}");</script>
</body>
</html>
"""


def _menu_day(day: str, date: str, dishes: list[tuple[str, str, str, str]]) -> str:
    rows = "\n".join(
        f"      <tr><td>{line}</td><td>{dish}</td><td>{allergens}</td><td>{price}</td></tr>"
        for line, dish, allergens, price in dishes
    )
    return f"""  <section>
    <h2 id="{day.lower()}">{day}, {date}</h2>
    <table class="menu">
      <thead><tr><th>Line</th><th>Dish</th><th>Allergens</th><th>Price</th></tr></thead>
      <tbody>
{rows}
      </tbody>
    </table>
  </section>
"""


CAFETERIA_HTML = (
    _INTRANET_TOP.format(
        title="The Forge: weekly menu, week 47",
        keywords="facilities, canteen, menu, food",
        updated="2026-11-13T12:00:00+01:00",
    )
    + """<article>
  <h1>The Forge: weekly menu, week 47 (16–20 November 2026)</h1>
  <p>Lunch is served in <strong>The Forge</strong>, Building C, Monday–Friday 11:15–14:00. Prices are
  employee prices including the Halden subsidy; guests pay the guest price shown on the screens. Every dish is
  labelled with the 14 main allergens; the codes are explained at the bottom of the page.</p>
"""
    + _menu_day(
        "Monday",
        "16 November",
        [
            ("Menu 1", "Braised beef with red cabbage and potato dumplings", "A, C, G, L", "EUR 4.20"),
            ("Menu 2 (vegan)", "Lentil and sweet potato curry with basmati rice", "F, L", "EUR 3.90"),
            ("Soup", "Pumpkin soup with toasted seeds", "G, K", "EUR 1.80"),
        ],
    )
    + _menu_day(
        "Tuesday",
        "17 November",
        [
            ("Menu 1", "Chicken schnitzel with fries and cucumber salad", "A, C, G", "EUR 4.20"),
            (
                "Menu 2 (vegetarian)",
                "Cheese spaetzle with fried onions and a green salad",
                "A, C, G",
                "EUR 3.90",
            ),
            ("Pasta bar", "Penne arrabbiata or pesto, parmesan on the side", "A, G, H", "EUR 4.50"),
        ],
    )
    + _menu_day(
        "Wednesday",
        "18 November",
        [
            ("Menu 1", "Baked pollock with dill sauce and parsley potatoes", "D, G", "EUR 4.20"),
            ("Menu 2 (vegan)", "Chickpea and spinach stew with flatbread", "A", "EUR 3.90"),
            ("Soup", "Minestrone", "I", "EUR 1.80"),
        ],
    )
    + _menu_day(
        "Thursday",
        "19 November",
        [
            ("Menu 1", "Turkey goulash with egg noodles (halal)", "A, C, I", "EUR 4.20"),
            ("Menu 2 (vegetarian)", "Mushroom risotto with rocket", "G, I", "EUR 3.90"),
            ("Late-shift dinner", "Chilli sin carne with rice, 18:00–19:30", "F", "EUR 3.90"),
        ],
    )
    + _menu_day(
        "Friday",
        "20 November",
        [
            ("Menu 1", "Fish and chips with remoulade", "A, C, D, J", "EUR 4.20"),
            ("Menu 2 (vegan)", "Vegetable lasagne with oat béchamel", "A, I", "EUR 3.90"),
            ("Dessert", "Apple strudel with vanilla sauce", "A, C, G", "EUR 1.50"),
        ],
    )
    + """  <section>
    <h2 id="allergens">Allergen codes</h2>
    <p>A gluten · C eggs · D fish · F soy · G milk · H nuts · I celery · J mustard · K sesame ·
    L sulphites. Medically required diets: order an individual meal from canteen@halden.example at least
    48 hours ahead.</p>
  </section>
  <form class="feedback" action="https://intranet.halden.example/canteen/feedback">
    <label>Menu wish <input name="wish"></label><button>Send</button>
  </form>
</article>
"""
    + _INTRANET_BOTTOM.format(
        related='<li><a href="canteen.md">Canteen (The Forge)</a></li>'
        '<li><a href="meeting-room-booking.md#catering">Meeting catering</a></li>',
        slug="canteen-menu",
    )
)

SHUTTLE_HTML = (
    _INTRANET_TOP.format(
        title="Shuttle bus timetable",
        keywords="facilities, shuttle, bus, orrenfeld, transport",
        updated="2026-10-26",
    )
    + """<h1 id="shuttle-bus-timetable">Shuttle bus timetable</h1>
<p>A free shuttle bus connects <strong>Vessberg HQ</strong> and <strong>Orrenfeld Valve Works</strong> on
working days. Seats are free and no booking is needed; show your badge to the driver. The ride takes about
45 minutes.</p>
<h2 id="vessberg-to-orrenfeld">Vessberg HQ to Orrenfeld</h2>
<table>
  <caption>Departures from Vessberg HQ, stop at Gate 1</caption>
  <tr><th>Departure</th><th>Arrival Orrenfeld (main gate)</th><th>Days</th></tr>
  <tr><td>07:15</td><td>08:00</td><td>Monday–Friday</td></tr>
  <tr><td>12:30</td><td>13:15</td><td>Monday–Friday</td></tr>
  <tr><td>16:45</td><td>17:30</td><td>Monday–Friday</td></tr>
</table>
<h2 id="orrenfeld-to-vessberg">Orrenfeld to Vessberg HQ</h2>
<table>
  <caption>Departures from Orrenfeld, stop at the main gate</caption>
  <tr><th>Departure</th><th>Arrival Vessberg HQ (Gate 1)</th><th>Days</th></tr>
  <tr><td>08:15</td><td>09:00</td><td>Monday–Friday</td></tr>
  <tr><td>13:30</td><td>14:15</td><td>Monday–Friday</td></tr>
  <tr><td>17:30</td><td>18:15</td><td>Monday–Friday</td></tr>
</table>
<h2 id="rules">Rules and changes</h2>
<ul>
  <li>The shuttle does not run on public holidays or during the year-end closure (24 December 2026 to
  1 January 2027).</li>
  <li>During the summer plant shutdown (3–14 August 2026) only the 07:15 and 16:45 trips from Vessberg and the
  08:15 and 17:30 trips from Orrenfeld run.</li>
  <li>Bicycles and large parcels are not carried; send parcels through the internal mail.</li>
  <li>There is no shuttle to Brakmoor Service Centre; book a pool car in the Workplace portal.</li>
  <li>Delays and cancellations are shown on the gate screens and announced by the gatehouse, ext. 4000.</li>
</ul>
<h3 id="lost-property">Lost property</h3>
<p>Items left on the bus are handed in at the gatehouse at Gate 1 and kept for 4 weeks.</p>
"""
    + _INTRANET_BOTTOM.format(
        related='<li><a href="office-locations-and-hours.md">Office locations and opening hours</a></li>'
        '<li><a href="parking.md">Parking, EV charging and bicycles</a></li>',
        slug="shuttle",
    )
)

_DIRECTORY = """\
IT Service Desk|4410|Vessberg HQ, Building A, A-014|servicedesk|Mon–Fri 07:00–18:00
IT on-call (urgent outages)|4499|Vessberg HQ, Building A|servicedesk|24/7
Information Security Office|4600|Vessberg HQ, Building A, 3rd floor|security|Mon–Fri 08:00–17:00
Security hotline|4666|Security Operations|security|24/7
HR Service Centre|4200|Vessberg HQ, Building A, A-110|hr|Mon–Fri 08:00–16:00
Payroll|4210|Vessberg HQ, Building A, A-112|hr|Mon–Fri 08:00–15:00
HR Training and Halden Academy|4280|Vessberg HQ, Plant 1, P1-105|academy|Mon–Fri 08:00–16:00
Works Council|4250|Vessberg HQ, Building A, A-120|works-council|Tue 10:00–12:00, Thu 13:00–14:00
Travel Desk|4330|Vessberg HQ, Building A, A-205|travel|Mon–Fri 08:00–17:00
Procurement|4340|Vessberg HQ, Building A, A-210|procurement|Mon–Fri 08:00–16:30
Finance Shared Services|4345|Vessberg HQ, Building A, A-214|expenses|Mon–Fri 08:00–16:30
Accounts Payable|4350|Vessberg HQ, Building A, A-216|ap|Mon–Fri 08:00–16:30
Legal|4140|Vessberg HQ, Building A, A-404|legal|Mon–Fri 08:30–17:00
Corporate Communications|4150|Vessberg HQ, Building A, A-402|comms|Mon–Fri 08:30–17:00
Data Protection Officer|4620|Vessberg HQ, Building A, A-305|dpo|Mon–Fri 09:00–16:00
Facilities Help Desk|4500|Vessberg HQ, Building C|facilities|Mon–Fri 07:00–17:00
Canteen (The Forge)|4560|Vessberg HQ, Building C|canteen|Mon–Fri 06:30–16:00
EHS (Environment, Health and Safety)|4700|Vessberg HQ, Building C, C-104|ehs|Mon–Fri 07:00–16:00
Occupational health|4710|Vessberg HQ, Building C, C-110|ehs|Tue and Thu 08:00–12:00
Gatehouse Gate 1|4000|Vessberg HQ, Gate 1|facilities|24/7
Reception Building A|4001|Vessberg HQ, Building A, ground floor|facilities|Mon–Fri 07:00–18:00
Orrenfeld reception|5001|Orrenfeld Valve Works, admin building|facilities|Mon–Fri 07:00–16:30
Brakmoor front desk|6001|Brakmoor Service Centre|facilities|Mon–Fri 07:30–16:00
"""

PHONE_DIRECTORY: list[dict[str, str]] = [
    {
        "department": department,
        "extension": extension,
        "location": location,
        "email_alias": f"{alias}@halden.example",
        "hours": hours,
    }
    for department, extension, location, alias, hours in (line.split("|") for line in _DIRECTORY.splitlines())
]

FAQ: list[dict[str, object]] = [
    {
        "id": "faq-001",
        "question": "I forgot my password. How do I reset it?",
        "answer": "Use the HaldenID self-service portal at https://intranet.halden.example/id/reset and "
        "confirm "
        "with the Halden Verify app. It works from home without the VPN. If you changed phones and did not "
        "move "
        "Halden Verify, call the IT Service Desk on ext. 4410.",
        "tags": ["it", "password", "haldenid"],
        "updated": "2026-03-02",
    },
    {
        "id": "faq-002",
        "question": "How many vacation days do I get?",
        "answer": "Full-time employees on a 5-day week get 30 working days per calendar year; continuous "
        "three-shift workers get 2 more. Part-time staff get a pro-rata share. Your balance is in "
        "PeopleHub > "
        "Time Off.",
        "tags": ["hr", "vacation", "leave"],
        "updated": "2026-01-12",
    },
    {
        "id": "faq-003",
        "question": "When does the shuttle bus to Orrenfeld leave?",
        "answer": "On working days at 07:15, 12:30 and 16:45 from Gate 1 at Vessberg HQ, and at 08:15, "
        "13:30 and "
        "17:30 from the Orrenfeld main gate. Seats are free and need no booking.",
        "tags": ["facilities", "shuttle", "orrenfeld"],
        "updated": "2026-10-26",
    },
    {
        "id": "faq-004",
        "question": "How do I pay in the canteen?",
        "answer": "With the badge wallet on your employee badge. Top it up at the terminals at the canteen "
        "entrance or in the Workplace portal under Canteen > Top up (minimum EUR 10, maximum balance EUR "
        "150).",
        "tags": ["facilities", "canteen", "badge"],
        "updated": "2026-10-01",
    },
    {
        "id": "faq-005",
        "question": "I received a suspicious email. What should I do?",
        "answer": "Do not click links or open attachments. Click Report Phish in the mail client, or "
        "forward the "
        "email as an attachment to phishing@halden.example. If you already clicked or entered your password, "
        "call the 24/7 security hotline on ext. 4666 at once.",
        "tags": ["security", "phishing"],
        "updated": "2026-05-04",
    },
    {
        "id": "faq-006",
        "question": "How long do I have to submit my travel expenses?",
        "answer": "Submit the expense report in ExpenseFlow within 30 days of the trip. Claims older than "
        "90 days "
        "are rejected unless your director approves an exception. Reports approved by the 20th are paid with "
        "that month's salary.",
        "tags": ["finance", "travel", "expenses"],
        "updated": "2026-06-02",
    },
    {
        "id": "faq-007",
        "question": "My laptop is broken. Can I get a replacement while it is repaired?",
        "answer": "Yes. Report the fault in the Service Desk portal or on ext. 4410 and bring the laptop "
        "to the IT "
        "Hub (Building A, room A-014). You get a loan laptop the same day; repairs take 3 to 5 working days.",
        "tags": ["it", "laptop", "hardware"],
        "updated": "2026-03-18",
    },
    {
        "id": "faq-008",
        "question": "What do I need to return when I leave Halden?",
        "answer": "Your laptop and charger, docking station, headset, company phone and SIM, any hardware "
        "MFA "
        "token, and your badge. The IT equipment return checklist lists where each item goes; IT confirms "
        "the "
        "return by email.",
        "tags": ["it", "hr", "leaving"],
        "updated": "2026-09-15",
    },
    {
        "id": "faq-009",
        "question": "Who do I call in an emergency on site?",
        "answer": "Call ext. 2222, the site emergency line, answered 24/7 by the gatehouse. From a mobile "
        "phone "
        "call 112 and then inform ext. 2222. Say where you are, what happened and how many people are hurt.",
        "tags": ["facilities", "health-and-safety", "emergency"],
        "updated": "2026-11-12",
    },
    {
        "id": "faq-010",
        "question": "Can I talk to the Works Council during working time?",
        "answer": "Yes. Consultation hours are Tuesdays 10:00-12:00 in Building A, room A-120, and Thursdays "
        "13:00-14:00 at the Orrenfeld admin building. You need no approval; tell your manager you are going. "
        "Contact: ext. 4250, works-council@halden.example.",
        "tags": ["hr", "works council"],
        "updated": "2026-04-20",
    },
]


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "handbook")
