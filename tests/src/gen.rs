//! Synthetic customer data for Parley's demo and end-to-end tests.
//!
//! [`generate`] writes one CSV per party (`<dir>/<node>/<dataset>.csv`) and returns a
//! [`Generated`] that knows the *ground truth*: which receiver records share a canonical
//! identifier with the sender.
//!
//! The truth is computed **independently of the production normaliser**. Every synthetic
//! person has one canonical email (lower case; for `gmail.com` no dots and no `+tag` in the
//! local part) and one canonical US phone (`+1XXXXXXXXXX`), both unique across persons.
//! Records only ever show *surface forms* of those identifiers — mixed case, surrounding
//! spaces, gmail dots and `+tags`, assorted phone punctuation, or (for
//! [`IdStyle::HashedEmailAndPhone`]) the SHA-256 hex of the canonical email in random case —
//! and the generator remembers which person (and so which canonical identifier) each
//! surface form stands for. A receiver record matches iff an identifier it carries *validly*
//! is carried validly by at least one sender record.
//!
//! Mix per party with a phone column (approximate): 65 % email + phone, 29.7 % email only,
//! 5 % phone only (empty email), 0.3 % invalid email + valid phone (matches on phone only).
//! Additionally 1 % of rows are duplicates (another `customer_id`, same person, same
//! identifiers carried, different surface form) and 0.5 % are bad rows (invalid email, empty
//! phone) that never match. [`IdStyle::EmailOnly`] parties always carry an email.
//!
//! Every row also gets a `region` (segment column, one of `north`, `south`, `east`, `west`)
//! and an `amount` (value column, `"123.45"`, uniform in 1.00..=999.99). The generator keeps
//! both per row, so [`Generated::truth_segments`] and [`Generated::truth_sum`] give the exact
//! per-segment statistics and PSI-sum results a node should compute.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// How a party presents its identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdStyle {
    /// `email` (kind `email`) and `phone` (kind `phone`) columns.
    EmailAndPhone,
    /// `email_sha256` (kind `sha256`: SHA-256 hex of the canonical email, random upper /
    /// lower case) and `phone` (kind `phone`) columns.
    HashedEmailAndPhone,
    /// `email` column only; every well-formed record carries an email.
    EmailOnly,
}

/// One party (node + dataset) of a synthetic federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartySpec {
    /// Node name; must be unique within the federation. The first two alphanumerics
    /// (upper-cased) prefix the `customer_id`s, e.g. `brand` → `BR-0000123`.
    pub node: String,
    /// Dataset name used in the node config.
    pub dataset: String,
    /// Total number of CSV data rows (excluding the header).
    pub records: usize,
    /// Identifier columns.
    pub style: IdStyle,
}

/// A whole synthetic federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSpec {
    /// RNG seed; the same spec always produces byte-identical files.
    pub seed: u64,
    /// The parties.
    pub parties: Vec<PartySpec>,
    /// `(party indices, n)`: `n` persons appear in exactly these parties (one primary record
    /// each). Every other person appears in exactly one party.
    pub overlaps: Vec<(Vec<usize>, usize)>,
}

impl FederationSpec {
    /// The demo federation: `brand` (`crm`, email + phone), `publisher` (`subscribers`,
    /// hashed email + phone) and `retailer` (`loyalty`, email + phone), `records` rows each.
    /// Persons shared by brand∩publisher only: 20 % of `records`, brand∩retailer only: 10 %,
    /// publisher∩retailer only: 12 %, all three: 8 %.
    pub fn demo(records: usize) -> Self {
        let pct = |p: usize| records * p / 100;
        let party = |node: &str, dataset: &str, style| PartySpec {
            node: node.to_owned(),
            dataset: dataset.to_owned(),
            records,
            style,
        };
        FederationSpec {
            seed: 0x5041_524c_4559, // "PARLEY"
            parties: vec![
                party("brand", "crm", IdStyle::EmailAndPhone),
                party("publisher", "subscribers", IdStyle::HashedEmailAndPhone),
                party("retailer", "loyalty", IdStyle::EmailAndPhone),
            ],
            overlaps: vec![
                (vec![0, 1], pct(20)),
                (vec![0, 2], pct(10)),
                (vec![1, 2], pct(12)),
                (vec![0, 1, 2], pct(8)),
            ],
        }
    }
}

/// One generated CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedParty {
    /// Node name.
    pub node: String,
    /// Dataset name.
    pub dataset: String,
    /// Absolute path of the CSV file.
    pub csv_path: PathBuf,
    /// Number of data rows.
    pub records: usize,
    /// `(column name, kind)` in file order; kind is one of
    /// `key | email | phone | sha256 | value | segment`.
    pub columns: Vec<(String, &'static str)>,
    /// Name of the record-key column (`customer_id`).
    pub key_column: String,
}

/// Canonical identifiers a record carries validly (as known to the generator).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanonicalIds {
    /// Canonical email (also for `sha256` columns: the email whose hash is shown).
    pub email: Option<String>,
    /// Canonical E.164 phone.
    pub phone: Option<String>,
}

/// Result of [`generate`]: the files written plus the ground truth.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The parties, in spec order.
    pub parties: Vec<GeneratedParty>,
    persons: Vec<Person>,
    /// Per party, per row in file order.
    truth: Vec<Vec<RecordTruth>>,
}

#[derive(Debug, Clone)]
struct Person {
    /// Canonical email.
    email: String,
    /// Byte index of `@` in `email`.
    at: usize,
    gmail: bool,
    /// 10-digit US national number.
    phone: u64,
}

#[derive(Debug, Clone)]
struct RecordTruth {
    key: String,
    /// Person id whose canonical email this record carries validly.
    email: Option<u32>,
    /// Person id whose canonical phone this record carries validly.
    phone: Option<u32>,
    /// The `region` written for this row (one of [`REGIONS`]).
    region: &'static str,
    /// The `amount` written for this row, in cents.
    amount_cents: u64,
}

impl RecordTruth {
    /// Whether a node loads this row: it carries at least one identifier validly.
    fn loaded(&self) -> bool {
        self.email.is_some() || self.phone.is_some()
    }
}

/// Ground-truth statistics of one segment (region) of a party's loaded rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentTruth {
    /// Number of loaded rows in the segment.
    pub rows: u64,
    /// Sum of their `amount`s, in cents.
    pub sum_cents: i128,
}

/// Ground truth of a PSI-sum job; see [`Generated::truth_sum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SumTruth {
    /// Number of intersecting email identifiers.
    pub count: u64,
    /// Sum of their clamped per-email totals, in cents (saturating at `u64::MAX`).
    pub sum_cents: u64,
}

/// Which identifiers a record shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Both,
    EmailOnly,
    PhoneOnly,
    BadEmailWithPhone,
}

struct Row {
    email: String,
    phone: String,
    truth_email: Option<u32>,
    truth_phone: Option<u32>,
}

const KEY_COLUMN: &str = "customer_id";
const MAX_BAD_ROW_FRACTION: &str = "0.02";
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];

/// Well-established US area codes (all valid in libphonenumber's US metadata).
const AREA_CODES: &[u16] = &[
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 225,
    228, 229, 231, 234, 239, 240, 248, 251, 252, 253, 254, 256, 260, 262, 267, 269, 270, 281, 301,
    302, 303, 304, 305, 307, 308, 309, 310, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 323,
    325, 330, 334, 336, 337, 347, 352, 360, 361, 386, 401, 402, 404, 405, 406, 407, 408, 409, 410,
    412, 413, 414, 415, 417, 419, 423, 425, 432, 434, 435, 440, 443, 469, 478, 479, 480, 484, 501,
    502, 503, 504, 505, 507, 508, 509, 510, 512, 513, 515, 516, 517, 518, 520, 530, 540, 541, 559,
    561, 562, 570, 571, 573, 574, 580, 585, 586, 601, 602, 603, 605, 606, 607, 608, 609, 610, 612,
    614, 615, 616, 617, 618, 619, 620, 623, 626, 630, 631, 636, 641, 646, 650, 651, 660, 661, 662,
    678, 682, 701, 702, 703, 704, 706, 707, 708, 712, 713, 714, 715, 716, 717, 718, 719, 720, 724,
    727, 731, 732, 734, 740, 754, 757, 760, 763, 765, 770, 772, 773, 774, 775, 781, 785, 786, 801,
    802, 803, 804, 805, 806, 808, 810, 812, 813, 814, 815, 816, 817, 818, 828, 830, 831, 832, 843,
    845, 847, 850, 856, 857, 858, 859, 860, 862, 863, 864, 865, 870, 901, 903, 904, 906, 907, 908,
    909, 910, 912, 913, 914, 915, 916, 917, 918, 919, 920, 925, 928, 931, 936, 937, 940, 941, 949,
    951, 952, 954, 956, 970, 971, 972, 973, 978, 979, 980, 985, 989,
];

/// `(domain, weight)`. `googlemail.com` is deliberately absent: the normaliser keeps it
/// distinct from `gmail.com`, so a person must never be shown under both.
const DOMAINS: &[(&str, u32)] = &[
    ("gmail.com", 40),
    ("yahoo.com", 14),
    ("outlook.com", 12),
    ("hotmail.com", 8),
    ("icloud.com", 7),
    ("aol.com", 3),
    ("example.org", 6),
    ("example.com", 5),
    ("proton.me", 5),
];

const FIRST_NAMES: &[&str] = &[
    "jane", "john", "mary", "james", "linda", "robert", "susan", "michael", "karen", "david",
    "lisa", "william", "nancy", "richard", "betty", "joseph", "sandra", "thomas", "ashley",
    "charles", "emily", "daniel", "donna", "matthew", "carol", "anthony", "amanda", "mark",
    "melissa", "paul", "deborah", "steven", "laura", "andrew", "rebecca", "kevin", "sharon",
    "brian", "cynthia", "george", "kathleen", "edward", "amy", "ronald", "angela", "timothy",
    "helen", "jason", "anna", "jeffrey", "brenda", "ryan", "pamela", "jacob", "nicole", "gary",
    "emma", "nicholas", "olivia", "eric", "sophia", "jonathan", "mia", "larry", "ava", "noah",
    "zoe", "liam", "chloe", "ethan",
];

const LAST_NAMES: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "gomez",
    "phillips",
    "evans",
    "turner",
    "diaz",
    "parker",
    "cruz",
    "edwards",
    "collins",
    "reyes",
    "stewart",
    "morris",
    "murphy",
    "cook",
    "rogers",
    "morgan",
    "peterson",
    "cooper",
    "reed",
    "bailey",
];

const BAD_EMAILS: &[&str] = &[
    "not-an-email",
    "n/a",
    "unknown",
    "jane.doe@",
    "@example.org",
    "jane doe at example.org",
    "none",
];

const BAD_HASHES: &[&str] = &["not-a-hash", "n/a", "unknown", "deadbeef", "none"];

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// `customer_id` prefix: first two ASCII alphanumerics of the node name, upper-cased.
fn key_prefix(node: &str) -> String {
    let mut p: String = node
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(2)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    while p.len() < 2 {
        p.push('X');
    }
    p
}

fn sha256_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    hex::encode(d.as_ref())
}

/// Creates persons with globally unique canonical emails and phones.
struct PersonGen {
    persons: Vec<Person>,
    emails: HashSet<String>,
    phones: HashSet<u64>,
    domain_total: u32,
}

impl PersonGen {
    fn new() -> Self {
        PersonGen {
            persons: Vec::new(),
            emails: HashSet::new(),
            phones: HashSet::new(),
            domain_total: DOMAINS.iter().map(|d| d.1).sum(),
        }
    }

    fn domain(&self, rng: &mut StdRng) -> &'static str {
        let mut x = rng.random_range(0..self.domain_total);
        for &(d, w) in DOMAINS {
            if x < w {
                return d;
            }
            x -= w;
        }
        DOMAINS[0].0
    }

    fn new_person(&mut self, rng: &mut StdRng) -> u32 {
        let domain = self.domain(rng);
        let gmail = domain == "gmail.com";
        let first = *pick(rng, FIRST_NAMES);
        let last = *pick(rng, LAST_NAMES);
        let initial = &first[..1];
        // Canonical local parts: gmail ones never contain '.' or '+'; others may contain '.'.
        let mut local = match (gmail, rng.random_range(0..6u8)) {
            (true, 0) | (true, 1) => format!("{first}{last}"),
            (true, 2) => format!("{initial}{last}"),
            (true, 3) => format!("{first}{last}{}", rng.random_range(1..100u32)),
            (true, 4) => format!("{first}{}", rng.random_range(1950..2010u32)),
            (true, _) => format!("{last}{initial}{}", rng.random_range(1..100u32)),
            (false, 0) | (false, 1) => format!("{first}.{last}"),
            (false, 2) => format!("{initial}{last}"),
            (false, 3) => format!("{first}.{last}{}", rng.random_range(1..100u32)),
            (false, 4) => format!("{first}{}", rng.random_range(1950..2010u32)),
            (false, _) => format!("{initial}.{last}{}", rng.random_range(1..100u32)),
        };
        let mut email = format!("{local}@{domain}");
        while self.emails.contains(&email) {
            local.push(char::from(b'0' + rng.random_range(0..10u8)));
            email = format!("{local}@{domain}");
        }
        self.emails.insert(email.clone());
        let phone = loop {
            let area = u64::from(*pick(rng, AREA_CODES));
            let exchange = loop {
                let e: u64 = rng.random_range(200..1000);
                if e % 100 != 11 && e != 555 {
                    break e;
                }
            };
            let line: u64 = rng.random_range(0..10_000);
            let n = area * 10_000_000 + exchange * 10_000 + line;
            if self.phones.insert(n) {
                break n;
            }
        };
        let id = u32::try_from(self.persons.len()).expect("fewer than 2^32 persons");
        self.persons.push(Person {
            at: local.len(),
            email,
            gmail,
            phone,
        });
        id
    }
}

/// Applies a random letter-case pattern.
fn mess_case(rng: &mut StdRng, s: &str) -> String {
    match rng.random_range(0..20u8) {
        0..=10 => s.to_owned(),
        11..=13 => s.to_ascii_uppercase(),
        14..=16 => {
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        }
        _ => s
            .chars()
            .map(|c| {
                if rng.random_bool(0.5) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// Random leading / trailing spaces.
fn pad(rng: &mut StdRng, s: String) -> String {
    let lead = if rng.random_bool(0.12) {
        rng.random_range(1..3usize)
    } else {
        0
    };
    let trail = if rng.random_bool(0.12) {
        rng.random_range(1..3usize)
    } else {
        0
    };
    if lead == 0 && trail == 0 {
        return s;
    }
    let mut out = String::with_capacity(s.len() + lead + trail);
    out.extend(std::iter::repeat_n(' ', lead));
    out.push_str(&s);
    out.extend(std::iter::repeat_n(' ', trail));
    out
}

/// A surface form of a canonical email: case, spaces, and for gmail dots and a `+tag`.
fn email_surface(rng: &mut StdRng, p: &Person) -> String {
    let (local, domain) = (&p.email[..p.at], &p.email[p.at + 1..]);
    let mut l = String::with_capacity(local.len() + 12);
    if p.gmail {
        for (i, c) in local.chars().enumerate() {
            if i > 0 && rng.random_bool(0.1) {
                l.push('.');
            }
            l.push(c);
        }
        if rng.random_bool(0.3) {
            l.push('+');
            for _ in 0..rng.random_range(1..8u8) {
                let x = rng.random_range(0..36u8);
                l.push(char::from(if x < 26 { b'a' + x } else { b'0' + x - 26 }));
            }
        }
    } else {
        l.push_str(local);
    }
    let s = format!("{}@{}", mess_case(rng, &l), mess_case(rng, domain));
    pad(rng, s)
}

/// SHA-256 hex of the canonical email in lower, upper or mixed case.
fn hash_surface(rng: &mut StdRng, p: &Person) -> String {
    let h = sha256_hex(&p.email);
    match rng.random_range(0..10u8) {
        0..=4 => h,
        5..=8 => h.to_ascii_uppercase(),
        _ => h
            .chars()
            .map(|c| {
                if rng.random_bool(0.5) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// A surface form of a canonical US phone.
fn phone_surface(rng: &mut StdRng, p: &Person) -> String {
    let a = p.phone / 10_000_000;
    let e = p.phone / 10_000 % 1000;
    let l = p.phone % 10_000;
    let s = match rng.random_range(0..100u8) {
        0..=17 => format!("+1 ({a}) {e}-{l:04}"),
        18..=35 => format!("{a}-{e}-{l:04}"),
        36..=53 => format!("({a}) {e} {l:04}"),
        54..=71 => format!("{a}{e}{l:04}"),
        72..=83 => format!("+1.{a}.{e}.{l:04}"),
        84..=87 => format!("001 {a} {e} {l:04}"),
        _ => format!("+1{a}{e}{l:04}"),
    };
    pad(rng, s)
}

fn pick_mode(rng: &mut StdRng, style: IdStyle) -> Mode {
    if style == IdStyle::EmailOnly {
        return Mode::EmailOnly;
    }
    match rng.random_range(0..1000u16) {
        0..=649 => Mode::Both,
        650..=946 => Mode::EmailOnly,
        947..=996 => Mode::PhoneOnly,
        _ => Mode::BadEmailWithPhone,
    }
}

fn person_row(rng: &mut StdRng, style: IdStyle, pid: u32, p: &Person, mode: Mode) -> Row {
    let valid_email = matches!(mode, Mode::Both | Mode::EmailOnly);
    let email = match mode {
        Mode::Both | Mode::EmailOnly => match style {
            IdStyle::HashedEmailAndPhone => hash_surface(rng, p),
            _ => email_surface(rng, p),
        },
        Mode::PhoneOnly => String::new(),
        Mode::BadEmailWithPhone => bad_email(rng, style),
    };
    let has_phone = matches!(mode, Mode::Both | Mode::PhoneOnly | Mode::BadEmailWithPhone);
    let phone = if has_phone {
        phone_surface(rng, p)
    } else {
        String::new()
    };
    Row {
        email,
        phone,
        truth_email: valid_email.then_some(pid),
        truth_phone: has_phone.then_some(pid),
    }
}

fn bad_email(rng: &mut StdRng, style: IdStyle) -> String {
    let list = if style == IdStyle::HashedEmailAndPhone {
        BAD_HASHES
    } else {
        BAD_EMAILS
    };
    (*pick(rng, list)).to_owned()
}

fn validate(spec: &FederationSpec) -> io::Result<()> {
    let mut nodes = HashSet::new();
    for p in &spec.parties {
        if !nodes.insert(p.node.as_str()) {
            return Err(invalid_input(format!("duplicate node name {:?}", p.node)));
        }
    }
    let n = spec.parties.len();
    let mut shared = vec![0usize; n];
    for (parties, count) in &spec.overlaps {
        let mut seen = HashSet::new();
        for &i in parties {
            if i >= n {
                return Err(invalid_input(format!(
                    "overlap party index {i} out of range"
                )));
            }
            if !seen.insert(i) {
                return Err(invalid_input(format!("overlap repeats party index {i}")));
            }
            shared[i] += count;
        }
    }
    for (p, s) in spec.parties.iter().zip(shared) {
        let need = s + dup_count(p.records) + bad_count(p.records);
        if need > p.records {
            return Err(invalid_input(format!(
                "party {:?}: {} records cannot hold {s} shared persons plus duplicates and bad rows",
                p.node, p.records
            )));
        }
    }
    Ok(())
}

fn dup_count(records: usize) -> usize {
    records / 100
}

fn bad_count(records: usize) -> usize {
    records / 200
}

/// Writes one CSV per party under `dir/<node>/<dataset>.csv` and returns the ground truth.
///
/// Deterministic for a given `spec` (including `seed`). Fails with
/// [`io::ErrorKind::InvalidInput`] if node names repeat, an overlap names a bad party index,
/// or a party has fewer `records` than its shared persons + 1 % duplicates + 0.5 % bad rows.
pub fn generate(dir: &Path, spec: &FederationSpec) -> io::Result<Generated> {
    validate(spec)?;
    fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut people = PersonGen::new();

    // Primary persons per party: the overlaps first, then persons of that party alone.
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); spec.parties.len()];
    for (parties, count) in &spec.overlaps {
        for _ in 0..*count {
            let pid = people.new_person(&mut rng);
            for &i in parties {
                members[i].push(pid);
            }
        }
    }
    for (i, p) in spec.parties.iter().enumerate() {
        let own = p.records - members[i].len() - dup_count(p.records) - bad_count(p.records);
        for _ in 0..own {
            let pid = people.new_person(&mut rng);
            members[i].push(pid);
        }
    }
    let persons = people.persons;

    let mut parties = Vec::with_capacity(spec.parties.len());
    let mut truth = Vec::with_capacity(spec.parties.len());
    for (p, members) in spec.parties.iter().zip(members) {
        let mut rows = Vec::with_capacity(p.records);
        let mut modes = Vec::with_capacity(members.len());
        for &pid in &members {
            let mode = pick_mode(&mut rng, p.style);
            modes.push(mode);
            rows.push(person_row(
                &mut rng,
                p.style,
                pid,
                &persons[pid as usize],
                mode,
            ));
        }
        // Duplicates: same person, same identifiers carried, different surface form.
        if !members.is_empty() {
            for _ in 0..dup_count(p.records) {
                let j = rng.random_range(0..members.len());
                let pid = members[j];
                let person = &persons[pid as usize];
                let mut row = person_row(&mut rng, p.style, pid, person, modes[j]);
                for _ in 0..16 {
                    if row.email != rows[j].email || row.phone != rows[j].phone {
                        break;
                    }
                    row = person_row(&mut rng, p.style, pid, person, modes[j]);
                }
                rows.push(row);
            }
        }
        // Bad rows: invalid email, no phone; never match.
        while rows.len() < p.records {
            rows.push(Row {
                email: bad_email(&mut rng, p.style),
                phone: String::new(),
                truth_email: None,
                truth_phone: None,
            });
        }
        rows.shuffle(&mut rng);

        let email_col = match p.style {
            IdStyle::HashedEmailAndPhone => ("email_sha256".to_owned(), "sha256"),
            _ => ("email".to_owned(), "email"),
        };
        let has_phone = p.style != IdStyle::EmailOnly;
        let mut columns = vec![(KEY_COLUMN.to_owned(), "key"), email_col];
        if has_phone {
            columns.push(("phone".to_owned(), "phone"));
        }
        columns.push(("region".to_owned(), "segment"));
        columns.push(("amount".to_owned(), "value"));

        let node_dir = dir.join(&p.node);
        fs::create_dir_all(&node_dir)?;
        let csv_path = node_dir.join(format!("{}.csv", p.dataset));
        let mut w =
            csv::Writer::from_writer(BufWriter::with_capacity(1 << 16, File::create(&csv_path)?));
        w.write_record(columns.iter().map(|c| c.0.as_str()))?;
        let prefix = key_prefix(&p.node);
        let mut party_truth = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let key = format!("{prefix}-{:07}", i + 1);
            let region = *pick(&mut rng, &REGIONS);
            let cents: u32 = rng.random_range(100..100_000);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            if has_phone {
                w.write_record([key.as_str(), &row.email, &row.phone, region, &amount])?;
            } else {
                w.write_record([key.as_str(), &row.email, region, &amount])?;
            }
            party_truth.push(RecordTruth {
                key,
                email: row.truth_email,
                phone: row.truth_phone,
                region,
                amount_cents: u64::from(cents),
            });
        }
        w.flush()?;
        parties.push(GeneratedParty {
            node: p.node.clone(),
            dataset: p.dataset.clone(),
            csv_path,
            records: party_truth.len(),
            columns,
            key_column: KEY_COLUMN.to_owned(),
        });
        truth.push(party_truth);
    }
    Ok(Generated {
        parties,
        persons,
        truth,
    })
}

/// Which identifier classes a column filter selects: `(email, phone)`.
fn classes(columns: Option<&[&str]>) -> (bool, bool) {
    match columns {
        None => (true, true),
        Some(cols) => {
            let email = cols
                .iter()
                .any(|c| matches!(*c, "email" | "sha256" | "email_sha256"));
            let phone = cols.contains(&"phone");
            (email, phone)
        }
    }
}

impl Generated {
    fn index(&self, node: &str) -> usize {
        self.parties
            .iter()
            .position(|p| p.node == node)
            .unwrap_or_else(|| panic!("no generated party for node {node:?}"))
    }

    /// The generated party of `node`, if any.
    pub fn party(&self, node: &str) -> Option<&GeneratedParty> {
        self.parties.iter().find(|p| p.node == node)
    }

    /// Receiver record keys that share at least one canonical identifier with any sender
    /// record.
    ///
    /// `columns` restricts the identifiers considered, on both sides. Entries are column
    /// names or kinds: `email`, `sha256` and `email_sha256` all select the email identifier
    /// (a hashed email matches the plain email it hashes); `phone` selects the phone. Other
    /// entries are ignored. `None` means all identifiers.
    ///
    /// # Panics
    /// If `receiver` or `sender` is not a generated node.
    pub fn truth_match(
        &self,
        receiver: &str,
        sender: &str,
        columns: Option<&[&str]>,
    ) -> BTreeSet<String> {
        let (use_email, use_phone) = classes(columns);
        let r = &self.truth[self.index(receiver)];
        let s = &self.truth[self.index(sender)];
        let mut emails = vec![false; self.persons.len()];
        let mut phones = vec![false; self.persons.len()];
        for rec in s {
            if let Some(e) = rec.email {
                emails[e as usize] = true;
            }
            if let Some(p) = rec.phone {
                phones[p as usize] = true;
            }
        }
        r.iter()
            .filter(|rec| {
                (use_email && rec.email.is_some_and(|e| emails[e as usize]))
                    || (use_phone && rec.phone.is_some_and(|p| phones[p as usize]))
            })
            .map(|rec| rec.key.clone())
            .collect()
    }

    /// `truth_match(receiver, sender, None).len()`.
    pub fn truth_cardinality(&self, receiver: &str, sender: &str) -> usize {
        self.truth_match(receiver, sender, None).len()
    }

    /// Row count and `amount` total (cents) per `region` over the rows `node` loads, i.e.
    /// the rows carrying at least one identifier validly (bad rows are left out). Regions
    /// without loaded rows are absent.
    ///
    /// # Panics
    /// If `node` is not a generated node.
    pub fn truth_segments(&self, node: &str) -> BTreeMap<String, SegmentTruth> {
        let mut out = BTreeMap::new();
        for rec in self.truth[self.index(node)].iter().filter(|r| r.loaded()) {
            let seg: &mut SegmentTruth = out.entry(rec.region.to_owned()).or_default();
            seg.rows += 1;
            seg.sum_cents += i128::from(rec.amount_cents);
        }
        out
    }

    /// The result of a PSI-sum job in which `values_node` (P2) contributes `amount`s keyed by
    /// its email identifier and `ids_node` (P1) contributes identifiers only.
    ///
    /// Definition, with `clamp(x) = min(max(x, lower_cents), upper_cents)`:
    /// 1. P2 uses **only** its email identifier column (`email` or `email_sha256`; a hashed
    ///    email equals the plain email it hashes). P2 rows without a valid email are ignored,
    ///    whatever else they carry.
    /// 2. Per row, the amount is clamped: `clamp(amount_cents)`.
    /// 3. Rows are grouped by canonical email; each email's total is the sum of its rows'
    ///    clamped amounts, and that total is clamped again: `clamp(Σ clamp(amount))`.
    /// 4. The intersection is the set of those emails that some P1 record carries validly
    ///    as its email. P1's phones never match (P2 offers no phones).
    ///
    /// `count` is the number of emails in the intersection and `sum_cents` the sum of their
    /// clamped totals, saturating at `u64::MAX`.
    ///
    /// # Panics
    /// If either node is not a generated node, or if `lower_cents > upper_cents`.
    pub fn truth_sum(
        &self,
        values_node: &str,
        ids_node: &str,
        lower_cents: u64,
        upper_cents: u64,
    ) -> SumTruth {
        assert!(
            lower_cents <= upper_cents,
            "truth_sum: lower bound {lower_cents} exceeds upper bound {upper_cents}"
        );
        let values = &self.truth[self.index(values_node)];
        let ids = &self.truth[self.index(ids_node)];
        let mut p1_emails = vec![false; self.persons.len()];
        for e in ids.iter().filter_map(|r| r.email) {
            p1_emails[e as usize] = true;
        }
        let mut totals: BTreeMap<u32, u128> = BTreeMap::new();
        for rec in values {
            if let Some(e) = rec.email {
                let clamped = rec.amount_cents.clamp(lower_cents, upper_cents);
                *totals.entry(e).or_default() += u128::from(clamped);
            }
        }
        let (lo, hi) = (u128::from(lower_cents), u128::from(upper_cents));
        let mut count = 0u64;
        let mut sum = 0u128;
        for (e, total) in totals {
            if p1_emails[e as usize] {
                count += 1;
                sum += total.clamp(lo, hi);
            }
        }
        SumTruth {
            count,
            sum_cents: u64::try_from(sum).unwrap_or(u64::MAX),
        }
    }

    /// The canonical identifiers record `key` of `node` carries validly (`None` if unknown).
    pub fn canonical_ids(&self, node: &str, key: &str) -> Option<CanonicalIds> {
        let i = self.parties.iter().position(|p| p.node == node)?;
        let rec = self.truth[i].iter().find(|r| r.key == key)?;
        Some(CanonicalIds {
            email: rec.email.map(|e| self.persons[e as usize].email.clone()),
            phone: rec
                .phone
                .map(|p| format!("+1{}", self.persons[p as usize].phone)),
        })
    }

    /// The `[[datasets]]` TOML block for `node`'s config: name, absolute path, key column,
    /// `max_bad_row_fraction = 0.02` and one `[[datasets.columns]]` per non-key column.
    ///
    /// # Panics
    /// If `node` is not a generated node.
    pub fn dataset_toml(&self, node: &str) -> String {
        let p = &self.parties[self.index(node)];
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = format!(
            "[[datasets]]\nname = {}\npath = {}\nkey_column = {}\nmax_bad_row_fraction = {MAX_BAD_ROW_FRACTION}\n",
            q(&p.dataset),
            q(&p.csv_path.to_string_lossy()),
            q(&p.key_column),
        );
        for (name, kind) in &p.columns {
            if *name == p.key_column {
                continue;
            }
            out.push_str(&format!(
                "\n[[datasets.columns]]\nname = {}\nkind = {}\n",
                q(name),
                q(kind)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Reference email normaliser for the tests (Google customer-list rules), written
    /// independently of production: trim, lower-case, gmail.com drops dots and `+tag`.
    fn ref_email(s: &str) -> Option<String> {
        let s = s.trim().to_ascii_lowercase();
        let (local, domain) = s.split_once('@')?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') || !domain.contains('.') {
            return None;
        }
        if local.contains(' ') || domain.contains(' ') {
            return None;
        }
        let local = if domain == "gmail.com" {
            local.split('+').next().unwrap_or_default().replace('.', "")
        } else {
            local.to_owned()
        };
        Some(format!("{local}@{domain}"))
    }

    fn ref_phone(s: &str) -> Option<String> {
        let t = s.trim();
        if t.is_empty() {
            return None;
        }
        let mut d: String = t.chars().filter(char::is_ascii_digit).collect();
        if !t.starts_with('+') && d.starts_with("001") {
            d.drain(..2);
        } else if !t.starts_with('+') && d.len() == 10 {
            d.insert(0, '1');
        }
        (d.len() == 11 && d.starts_with('1')).then(|| format!("+{d}"))
    }

    fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::Reader::from_path(path).expect("open csv");
        let header = r
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = r
            .records()
            .map(|rec| rec.expect("record").iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    fn small() -> (tempfile::TempDir, Generated) {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(dir.path(), &FederationSpec::demo(5_000)).expect("generate");
        (dir, g)
    }

    #[test]
    fn reproducible_with_same_seed() {
        let spec = FederationSpec::demo(2_000);
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let ga = generate(a.path(), &spec).expect("gen a");
        let gb = generate(b.path(), &spec).expect("gen b");
        for (pa, pb) in ga.parties.iter().zip(&gb.parties) {
            let fa = fs::read(&pa.csv_path).expect("read a");
            let fb = fs::read(&pb.csv_path).expect("read b");
            assert_eq!(fa, fb, "{} differs", pa.node);
        }
        assert_eq!(
            ga.truth_match("brand", "publisher", None),
            gb.truth_match("brand", "publisher", None)
        );
        let mut other = spec.clone();
        other.seed += 1;
        let c = tempfile::tempdir().expect("c");
        let gc = generate(c.path(), &other).expect("gen c");
        assert_ne!(
            fs::read(&ga.parties[0].csv_path).expect("a"),
            fs::read(&gc.parties[0].csv_path).expect("c")
        );
    }

    #[test]
    fn files_parse_with_right_header_and_unique_keys() {
        let (_dir, g) = small();
        for p in &g.parties {
            assert!(p.csv_path.is_absolute());
            let (header, rows) = read_csv(&p.csv_path);
            let expected: Vec<&str> = match p.node.as_str() {
                "publisher" => vec!["customer_id", "email_sha256", "phone", "region", "amount"],
                _ => vec!["customer_id", "email", "phone", "region", "amount"],
            };
            assert_eq!(header, expected);
            assert_eq!(
                p.columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
                expected
            );
            assert_eq!(rows.len(), 5_000);
            assert_eq!(p.records, 5_000);
            let prefix = key_prefix(&p.node);
            let keys: HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
            assert_eq!(keys.len(), rows.len());
            for r in &rows {
                assert!(r[0].starts_with(&format!("{prefix}-")) && r[0].len() == 10);
                assert!(REGIONS.contains(&r[3].as_str()));
                let (int, frac) = r[4].split_once('.').expect("decimal");
                assert!(int.parse::<u32>().is_ok() && frac.len() == 2);
            }
        }
        assert_eq!(key_prefix("brand"), "BR");
        assert_eq!(key_prefix("publisher"), "PU");
    }

    #[test]
    fn email_only_style_has_no_phone_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = FederationSpec {
            seed: 7,
            parties: vec![
                PartySpec {
                    node: "a".into(),
                    dataset: "d".into(),
                    records: 1_000,
                    style: IdStyle::EmailOnly,
                },
                PartySpec {
                    node: "b".into(),
                    dataset: "d".into(),
                    records: 1_000,
                    style: IdStyle::EmailAndPhone,
                },
            ],
            overlaps: vec![(vec![0, 1], 300)],
        };
        let g = generate(dir.path(), &spec).expect("generate");
        let (header, rows) = read_csv(&g.parties[0].csv_path);
        assert_eq!(header, ["customer_id", "email", "region", "amount"]);
        assert!(rows.iter().all(|r| r.len() == 4));
        // b's phone-only records cannot match a; everything else shared can.
        let m = g.truth_match("a", "b", None);
        assert!((270..=300).contains(&m.len()), "{}", m.len());
        assert!(g.truth_match("a", "b", Some(&["phone"])).is_empty());
        let bad = generate(
            dir.path(),
            &FederationSpec {
                overlaps: vec![(vec![0, 2], 1)],
                ..spec.clone()
            },
        );
        assert_eq!(
            bad.expect_err("bad index").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// Every surface form in the files normalises (by the independent reference rules) to
    /// exactly the canonical identifier the truth says it carries.
    #[test]
    fn surface_forms_normalise_to_truth() {
        let (_dir, g) = small();
        let mut gmail_messy = 0;
        for (pi, p) in g.parties.iter().enumerate() {
            let (_, rows) = read_csv(&p.csv_path);
            let hashed = p.columns[1].1 == "sha256";
            for (row, t) in rows.iter().zip(&g.truth[pi]) {
                assert_eq!(row[0], t.key);
                let email = if hashed {
                    let h = row[1].to_ascii_lowercase();
                    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
                } else {
                    ref_email(&row[1])
                };
                let want = t.email.map(|e| {
                    let canon = &g.persons[e as usize].email;
                    if hashed {
                        sha256_hex(canon)
                    } else {
                        canon.clone()
                    }
                });
                assert_eq!(email, want, "email {:?} of {}", row[1], t.key);
                let want_phone = t
                    .phone
                    .map(|ph| format!("+1{}", g.persons[ph as usize].phone));
                assert_eq!(ref_phone(&row[2]), want_phone, "phone {:?}", row[2]);
                if !hashed && row[1].contains("@") && row[1].to_ascii_lowercase().contains("gmail")
                {
                    let local = row[1].trim().split('@').next().unwrap_or_default();
                    if local.contains('.') && local.contains('+') {
                        gmail_messy += 1;
                    }
                }
            }
        }
        assert!(gmail_messy > 50, "{gmail_messy}");
        for p in &g.persons {
            assert_eq!(ref_email(&p.email).as_deref(), Some(p.email.as_str()));
            assert!(!p.email.contains("googlemail"));
            if p.gmail {
                assert!(!p.email[..p.at].contains(['.', '+']));
            }
        }
        let ids = g.canonical_ids("brand", &g.truth[0][0].key).expect("ids");
        assert_eq!(ids.email.is_some(), g.truth[0][0].email.is_some());
    }

    #[test]
    fn gmail_surface_hand_check() {
        let jane = Person {
            email: "jane@gmail.com".into(),
            at: 4,
            gmail: true,
            phone: 2_015_550_100,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut forms = HashSet::new();
        for _ in 0..20_000 {
            forms.insert(email_surface(&mut rng, &jane));
        }
        assert!(forms.contains("jane@gmail.com"));
        // Something shaped like " Ja.ne+x@GMAIL.com": spaces, a dot, a tag, upper case.
        let messy = forms.iter().find(|f| {
            let (local, _) = f.split_once('@').expect("@");
            f.starts_with(' ')
                && local.contains('.')
                && local.contains('+')
                && f.chars().any(|c| c.is_ascii_uppercase())
        });
        assert!(messy.is_some(), "no messy gmail form among {}", forms.len());
        for f in &forms {
            assert_eq!(ref_email(f).as_deref(), Some("jane@gmail.com"), "{f:?}");
        }
        let mut phones = HashSet::new();
        for _ in 0..2_000 {
            let s = phone_surface(&mut rng, &jane);
            assert_eq!(ref_phone(&s).as_deref(), Some("+12015550100"), "{s:?}");
            phones.insert(s.trim().to_owned());
        }
        for f in [
            "+1 (201) 555-0100",
            "201-555-0100",
            "(201) 555 0100",
            "2015550100",
            "+1.201.555.0100",
            "001 201 555 0100",
        ] {
            assert!(phones.contains(f), "{f}");
        }
    }

    #[test]
    fn overlaps_roughly_as_specified() {
        let n = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(dir.path(), &FederationSpec::demo(n)).expect("generate");
        // Shared persons: b∩p 28 %, b∩r 18 %, p∩r 20 % (pairwise incl. the triple).
        for (a, b, pct) in [
            ("brand", "publisher", 28),
            ("brand", "retailer", 18),
            ("publisher", "retailer", 20),
        ] {
            let shared = n * pct / 100;
            for (r, s) in [(a, b), (b, a)] {
                let c = g.truth_cardinality(r, s);
                assert!(
                    c * 100 >= shared * 93 && c * 100 <= shared * 102,
                    "{r}->{s}: {c} vs {shared}"
                );
            }
            let email = g.truth_match(a, b, Some(&["email", "sha256"])).len();
            let phone = g.truth_match(a, b, Some(&["phone"])).len();
            assert!(email * 100 > shared * 85 && phone * 100 > shared * 40);
        }
        // Identifier-level: union of per-identifier matches is the full match.
        let all = g.truth_match("brand", "retailer", None);
        let mut union = g.truth_match("brand", "retailer", Some(&["email"]));
        union.extend(g.truth_match("brand", "retailer", Some(&["phone"])));
        assert_eq!(all, union);
        let _ = g.dataset_toml("brand");
    }

    /// Matching is symmetric at the person level (records differ only by duplicates).
    #[test]
    fn truth_symmetric_per_person() {
        let (_dir, g) = small();
        let persons_of = |node: &str, keys: &BTreeSet<String>| -> BTreeSet<u32> {
            let t = &g.truth[g.index(node)];
            let by_key: HashMap<&str, &RecordTruth> =
                t.iter().map(|r| (r.key.as_str(), r)).collect();
            keys.iter()
                .map(|k| {
                    let r = by_key[k.as_str()];
                    r.email.or(r.phone).expect("matched record has an id")
                })
                .collect()
        };
        for (a, b) in [
            ("brand", "publisher"),
            ("brand", "retailer"),
            ("publisher", "retailer"),
        ] {
            for cols in [None, Some(&["email"][..]), Some(&["phone"][..])] {
                let ab = persons_of(a, &g.truth_match(a, b, cols));
                let ba = persons_of(b, &g.truth_match(b, a, cols));
                assert_eq!(ab, ba, "{a}/{b} {cols:?}");
            }
        }
        // Duplicates of matched persons are matched too.
        let m = g.truth_match("brand", "publisher", None);
        let t = &g.truth[0];
        let matched: BTreeSet<u32> = persons_of("brand", &m);
        let mut dup_seen = 0;
        let mut count: HashMap<u32, Vec<&RecordTruth>> = HashMap::new();
        for r in t {
            if let Some(p) = r.email.or(r.phone) {
                count.entry(p).or_default().push(r);
            }
        }
        for (p, recs) in count.iter().filter(|(_, v)| v.len() > 1) {
            if matched.contains(p) {
                dup_seen += 1;
                assert!(recs.iter().all(|r| m.contains(&r.key)));
            }
        }
        assert!(dup_seen > 0);
    }

    #[test]
    fn dataset_toml_shape() {
        let (_dir, g) = small();
        let t: toml::Table = toml::from_str(&g.dataset_toml("publisher")).expect("toml");
        let ds = t["datasets"].as_array().expect("array");
        assert_eq!(ds.len(), 1);
        let d = ds[0].as_table().expect("table");
        assert_eq!(d["name"].as_str(), Some("subscribers"));
        assert_eq!(d["key_column"].as_str(), Some("customer_id"));
        assert_eq!(d["max_bad_row_fraction"].as_float(), Some(0.02));
        let path = PathBuf::from(d["path"].as_str().expect("path"));
        assert!(path.is_absolute() && path.exists());
        let cols: Vec<(String, String)> = d["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().expect("name").to_owned(),
                    c["kind"].as_str().expect("kind").to_owned(),
                )
            })
            .collect();
        let want = [
            ("email_sha256", "sha256"),
            ("phone", "phone"),
            ("region", "segment"),
            ("amount", "value"),
        ];
        assert_eq!(cols.len(), want.len());
        for ((n, k), (wn, wk)) in cols.iter().zip(want) {
            assert_eq!((n.as_str(), k.as_str()), (wn, wk));
        }
    }

    #[test]
    fn bad_row_fraction_below_limit() {
        let (_dir, g) = small();
        for (pi, p) in g.parties.iter().enumerate() {
            let none = g.truth[pi]
                .iter()
                .filter(|r| r.email.is_none() && r.phone.is_none())
                .count();
            let invalid_email = g.truth[pi]
                .iter()
                .filter(|r| r.email.is_none() && r.phone.is_some())
                .count();
            assert!(none >= 1 && none * 100 < p.records, "{none}");
            // Phone-only (~5 %) plus invalid-email-with-phone (~0.3 %).
            assert!(invalid_email * 100 < p.records * 8, "{invalid_email}");
        }
    }

    fn parse_cents(s: &str) -> u64 {
        let (int, frac) = s.split_once('.').expect("decimal");
        assert_eq!(frac.len(), 2, "{s:?}");
        int.parse::<u64>().expect("int") * 100 + frac.parse::<u64>().expect("cents")
    }

    fn demo_2k() -> (tempfile::TempDir, Generated) {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(dir.path(), &FederationSpec::demo(2_000)).expect("generate");
        (dir, g)
    }

    /// `(values node, ids node)` pairs covering plain and hashed email on either side.
    const SUM_PAIRS: [(&str, &str); 4] = [
        ("publisher", "brand"),
        ("brand", "publisher"),
        ("retailer", "brand"),
        ("brand", "retailer"),
    ];

    /// Segments recomputed from the CSV files alone: a row is loaded iff its email (or
    /// hash) or phone is valid by the reference rules.
    #[test]
    fn truth_segments_match_csv() {
        let (_dir, g) = small();
        for (pi, p) in g.parties.iter().enumerate() {
            let (header, rows) = read_csv(&p.csv_path);
            let col = |name: &str| header.iter().position(|h| h == name);
            let (email, hashed, phone) = (col("email"), col("email_sha256"), col("phone"));
            let region = col("region").expect("region column");
            let amount = col("amount").expect("amount column");
            let mut want: BTreeMap<String, SegmentTruth> = BTreeMap::new();
            for r in &rows {
                let valid = email.is_some_and(|i| ref_email(&r[i]).is_some())
                    || hashed.is_some_and(|i| {
                        let h = r[i].trim();
                        h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    || phone.is_some_and(|i| ref_phone(&r[i]).is_some());
                if valid {
                    let seg = want.entry(r[region].clone()).or_default();
                    seg.rows += 1;
                    seg.sum_cents += i128::from(parse_cents(&r[amount]));
                }
            }
            let got = g.truth_segments(&p.node);
            assert_eq!(got, want, "{}", p.node);
            let loaded = g.truth[pi].iter().filter(|r| r.loaded()).count();
            let total: u64 = got.values().map(|s| s.rows).sum();
            assert_eq!(total, loaded as u64);
            assert!(loaded < rows.len(), "bad rows are not loaded");
            assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), {
                let mut r = REGIONS.to_vec();
                r.sort_unstable();
                r
            });
        }
    }

    /// PSI-sum recomputed from the files: amounts parsed from the CSV, emails from
    /// `canonical_ids` of each row's key; row-wise then per-email bounds via `max`/`min`.
    fn brute_sum(g: &Generated, values: &str, ids: &str, lo: u64, hi: u64) -> SumTruth {
        let rows_of = |node: &str| -> Vec<(CanonicalIds, u64)> {
            let p = g.party(node).expect("party");
            let (header, rows) = read_csv(&p.csv_path);
            let amount = header.iter().position(|h| h == "amount").expect("amount");
            rows.iter()
                .map(|r| {
                    let ids = g.canonical_ids(node, &r[0]).expect("known key");
                    (ids, parse_cents(&r[amount]))
                })
                .collect()
        };
        let p1: HashSet<String> = rows_of(ids)
            .into_iter()
            .filter_map(|(c, _)| c.email)
            .collect();
        let mut per_email: HashMap<String, Vec<u64>> = HashMap::new();
        for (c, a) in rows_of(values) {
            if let Some(e) = c.email {
                per_email.entry(e).or_default().push(a);
            }
        }
        let mut out = SumTruth::default();
        for (e, amounts) in per_email {
            if p1.contains(&e) {
                let total: u64 = amounts.iter().map(|a| (*a).max(lo).min(hi)).sum();
                out.count += 1;
                out.sum_cents += total.max(lo).min(hi);
            }
        }
        out
    }

    #[test]
    fn truth_sum_matches_brute_force() {
        let (_dir, g) = demo_2k();
        for (v, i) in SUM_PAIRS {
            for (lo, hi) in [(0, u64::MAX / 4), (0, 500), (200, 5_000), (50_000, 80_000)] {
                let got = g.truth_sum(v, i, lo, hi);
                assert_eq!(got, brute_sum(&g, v, i, lo, hi), "{v}/{i} [{lo}, {hi}]");
                assert!(got.count > 0);
            }
        }
    }

    #[test]
    fn truth_sum_clamping_lowers_sum() {
        let (_dir, g) = demo_2k();
        for (v, i) in SUM_PAIRS {
            let full = g.truth_sum(v, i, 0, u64::MAX / 4);
            let capped = g.truth_sum(v, i, 0, 10_000);
            assert_eq!(capped.count, full.count);
            assert!(capped.sum_cents < full.sum_cents, "{v}/{i}");
            assert!(capped.sum_cents <= capped.count * 10_000);
            let fixed = g.truth_sum(v, i, 700, 700);
            assert_eq!(fixed.count, full.count);
            assert_eq!(fixed.sum_cents, fixed.count * 700);
            let huge = g.truth_sum(v, i, u64::MAX, u64::MAX);
            assert_eq!(huge.sum_cents, u64::MAX, "saturates");
        }
    }

    /// The email-only record match, counted in distinct canonical emails, is the PSI-sum
    /// intersection; phone matches do not count.
    #[test]
    fn truth_sum_count_matches_email_truth_match() {
        let (_dir, g) = demo_2k();
        for (v, i) in SUM_PAIRS {
            let keys = g.truth_match(v, i, Some(&["email"]));
            let emails: BTreeSet<String> = keys
                .iter()
                .map(|k| {
                    let ids = g.canonical_ids(v, k).expect("known key");
                    ids.email.expect("matched on email")
                })
                .collect();
            let sum = g.truth_sum(v, i, 0, u64::MAX / 4);
            assert_eq!(sum.count, emails.len() as u64, "{v}/{i}");
            assert!(g.truth_match(v, i, None).len() > keys.len());
        }
    }

    /// Hand-built truth: per-row clamp, then per-email clamp; a P1 phone never matches.
    #[test]
    fn truth_sum_known_answer() {
        let person = |email: &str, phone| Person {
            email: email.into(),
            at: email.find('@').expect("@"),
            gmail: false,
            phone,
        };
        let party = |node: &str| GeneratedParty {
            node: node.into(),
            dataset: "d".into(),
            csv_path: PathBuf::from("/nonexistent"),
            records: 0,
            columns: Vec::new(),
            key_column: KEY_COLUMN.into(),
        };
        let rec = |key: &str, email, phone, region, amount_cents| RecordTruth {
            key: key.into(),
            email,
            phone,
            region,
            amount_cents,
        };
        let g = Generated {
            parties: vec![party("p1"), party("p2")],
            persons: vec![
                person("a@example.org", 2_015_550_100),
                person("b@example.org", 2_015_550_101),
                person("c@example.org", 2_015_550_102),
            ],
            truth: vec![
                vec![
                    rec("P1-1", Some(0), None, "north", 1),
                    rec("P1-2", None, Some(1), "north", 1),
                    rec("P1-3", None, None, "south", 1),
                ],
                vec![
                    rec("P2-1", Some(0), Some(0), "north", 100),
                    rec("P2-2", Some(0), None, "east", 900),
                    rec("P2-3", Some(1), Some(1), "east", 50),
                    rec("P2-4", None, Some(0), "west", 7000),
                    rec("P2-5", None, None, "west", 9_999),
                ],
            ],
        };
        // a: clamp(100) + clamp(900) = 200 + 900 = 1100 -> 1000; b only by phone in P1.
        assert_eq!(
            g.truth_sum("p2", "p1", 200, 1_000),
            SumTruth {
                count: 1,
                sum_cents: 1_000
            }
        );
        // a: 100 + 500 = 600 -> 500.
        assert_eq!(g.truth_sum("p2", "p1", 0, 500).sum_cents, 500);
        assert_eq!(g.truth_sum("p2", "p1", 0, 10_000).sum_cents, 1_000);
        assert_eq!(g.truth_sum("p1", "p2", 0, 10_000).sum_cents, 1);
        let seg = g.truth_segments("p2");
        assert_eq!(seg.len(), 3);
        assert_eq!(
            seg["east"],
            SegmentTruth {
                rows: 2,
                sum_cents: 950
            }
        );
        assert_eq!(
            seg["west"],
            SegmentTruth {
                rows: 1,
                sum_cents: 7000
            }
        );
        assert_eq!(g.truth_segments("p1").len(), 1);
    }

    #[test]
    #[should_panic(expected = "exceeds upper bound")]
    fn truth_sum_rejects_inverted_bounds() {
        let (_dir, g) = demo_2k();
        let _ = g.truth_sum("brand", "publisher", 10, 9);
    }
}
