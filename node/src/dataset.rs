//! Datasets: a CSV file loaded into memory as records of hashed identifiers.
//!
//! [`Dataset::load`] streams the CSV file of a `[[datasets]]` entry once. For every row it
//! keeps the record key, the SHA-256 identifiers of the declared identifier columns
//! (normalised by [`Normalizer`]), and the declared value and segment columns. Raw emails and
//! phone numbers are never kept: only their hashes.
//!
//! Row rules:
//! * the key cell must not be blank, else the row is bad (`missing key`); so must the person
//!   cell when the dataset names a separate `person_column` (`missing person`);
//! * a sha256 column is written in one encoding, hex or base64; a column that mixes them fails
//!   to load ([`NodeError::MixedEncoding`]);
//! * a blank identifier cell is simply absent; an identifier that does not normalise is
//!   dropped and counted per (column, reason); a row left with no valid identifier is bad
//!   (`no valid identifier`);
//! * a value cell must be a finite number, else the row is bad;
//! * a date cell must be an ISO 8601 date or date-time ([`parse_timestamp`]), else the row is
//!   bad (`invalid date in column '…'`);
//! * a malformed CSV line (wrong number of fields) or a used cell that is not UTF-8 makes the
//!   row bad.
//!
//! For each identifier column the [`LoadReport`] also counts, over the rows loaded, the valid
//! values, the values whose hash repeats one already in the column, and the values that
//! normalisation changed, by kind of change ([`crate::diagnostics`]).
//!
//! Bad rows are skipped and counted in a [`LoadReport`]; if their share exceeds the dataset's
//! `max_bad_row_fraction`, loading fails with [`NodeError::TooManyBadRows`].
//!
//! Privacy: reports and errors carry line numbers, column names, counts and reasons only —
//! never a cell's content.
//!
//! Persons: every row belongs to one person, named by the dataset's person column (the key
//! column unless `person_column` says otherwise); [`Dataset::persons`] numbers them. The
//! person is the privacy unit that DP releases bound contributions of.
//!
//! Memory: keys live in one string buffer, identifiers in flat arrays with per-record
//! offsets (about 34 bytes per identifier plus 20 bytes and the key's length per record), so
//! 10^6 records with two identifiers each take roughly 100 MB. Counting duplicates at the
//! end of loading briefly takes 8 more bytes per identifier.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use parley_crypto::normalize::{IdHash, Normalizer, Sha256Encoding};
use parley_proto::{ColumnInfo, DatasetInfo};
use rayon::prelude::*;

use crate::NodeError;
use crate::config::{ColumnConfig, ColumnKind, DatasetConfig};
use crate::diagnostics::{self, Changes, ColumnDiagnostics};

/// Rows parsed in parallel at a time.
const CHUNK_ROWS: usize = 16_384;

/// How many bad-row examples a [`LoadReport`] keeps.
pub const MAX_EXAMPLES: usize = 20;

/// Reason recorded for a row whose key cell is blank.
pub const REASON_MISSING_KEY: &str = "missing key";
/// Reason recorded for a row whose person cell is blank.
pub const REASON_MISSING_PERSON: &str = "missing person";
/// Reason recorded for a row without any valid identifier.
pub const REASON_NO_IDENTIFIER: &str = "no valid identifier";

/// What happened while loading a dataset. Counts, column names, reasons and line numbers
/// only — never cell contents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Data rows read (header excluded), good and bad.
    pub rows_read: u64,
    /// Rows kept.
    pub rows_loaded: u64,
    /// Rows skipped, per reason.
    pub bad_rows: BTreeMap<String, u64>,
    /// Identifiers dropped (their row may still be kept), per (column, reason).
    pub bad_identifiers: BTreeMap<(String, String), u64>,
    /// The first bad rows: (line number, reason). Line 1 is the header.
    pub examples: Vec<(u64, String)>,
    /// Per identifier column, in config order: valid values, duplicates and changes made by
    /// normalisation, over the rows loaded (see [`crate::diagnostics`]).
    pub identifiers: Vec<ColumnDiagnostics>,
}

impl LoadReport {
    /// Total rows skipped.
    pub fn bad_row_count(&self) -> u64 {
        self.bad_rows.values().sum()
    }

    /// Total identifiers dropped.
    pub fn bad_identifier_count(&self) -> u64 {
        self.bad_identifiers.values().sum()
    }

    /// Identifiers of `column` dropped, per reason.
    pub fn invalid_identifiers<'a>(
        &'a self,
        column: &'a str,
    ) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.bad_identifiers
            .iter()
            .filter(move |((c, _), _)| c == column)
            .map(|((_, reason), n)| (reason.as_str(), *n))
    }

    /// One line per identifier column, for `parley-node check`: "column 'email': 998 valid,
    /// 2 invalid (invalid email: 2), 5 duplicates; 38% changed (case 30%, whitespace 5%,
    /// gmail dots or +suffix 4%)". Counts and percentages only.
    pub fn identifier_lines(&self) -> Vec<String> {
        self.identifiers
            .iter()
            .map(|d| {
                let mut line = format!("column '{}': {} valid", d.column, d.valid);
                let invalid: Vec<(&str, u64)> = self.invalid_identifiers(&d.column).collect();
                let total: u64 = invalid.iter().map(|(_, n)| n).sum();
                line.push_str(&format!(", {total} invalid"));
                if total > 0 {
                    let parts: Vec<String> =
                        invalid.iter().map(|(r, n)| format!("{r}: {n}")).collect();
                    line.push_str(&format!(" ({})", parts.join(", ")));
                }
                let s = if d.duplicates == 1 { "" } else { "s" };
                line.push_str(&format!(", {} duplicate{s}", d.duplicates));
                let changed = d.to_string();
                if !changed.is_empty() {
                    line.push_str("; ");
                    line.push_str(&changed);
                }
                line
            })
            .collect()
    }

    fn bad_row(&mut self, line: u64, reason: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push((line, reason.clone()));
        }
        *self.bad_rows.entry(reason).or_insert(0) += 1;
    }
}

impl fmt::Display for LoadReport {
    /// One line: "1000 rows read, 990 loaded, 10 bad (missing key: 4, no valid identifier: 6;
    /// first at lines 3, 7, 9); 25 identifiers dropped (column 'email': invalid email: 25)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bad = self.bad_row_count();
        write!(
            f,
            "{} rows read, {} loaded, {} bad",
            self.rows_read, self.rows_loaded, bad
        )?;
        if bad > 0 {
            f.write_str(" (")?;
            for (i, (reason, n)) in self.bad_rows.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{reason}: {n}")?;
            }
            if !self.examples.is_empty() {
                f.write_str("; first at lines ")?;
                for (i, (line, _)) in self.examples.iter().take(10).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{line}")?;
                }
            }
            f.write_str(")")?;
        }
        let dropped = self.bad_identifier_count();
        if dropped > 0 {
            write!(f, "; {dropped} identifiers dropped (")?;
            for (i, ((column, reason), n)) in self.bad_identifiers.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "column '{column}': {reason}: {n}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A segment column, stored as category codes. `Debug` prints counts only.
#[derive(Clone, Default)]
pub struct SegmentColumn {
    categories: Vec<String>,
    codes: Vec<u32>,
}

impl SegmentColumn {
    /// Distinct categories (trimmed cell contents), in order of first appearance.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// Per record, the index of its category in [`categories`](Self::categories).
    pub fn codes(&self) -> &[u32] {
        &self.codes
    }

    /// Record `i`'s category. Panics if `i` is out of range.
    pub fn get(&self, i: usize) -> &str {
        &self.categories[self.codes[i] as usize]
    }
}

impl fmt::Debug for SegmentColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentColumn")
            .field("categories", &self.categories.len())
            .field("records", &self.codes.len())
            .finish()
    }
}

/// Per declared column, what is stored for it.
#[derive(Clone)]
enum ColumnData {
    /// Hashes live in the dataset's flat identifier arrays.
    Identifier,
    /// One finite number per record.
    Value(Vec<f64>),
    /// One category per record.
    Segment(SegmentColumn),
    /// One instant per record, milliseconds since the Unix epoch (UTC).
    Date(Vec<i64>),
}

/// A loaded dataset.
///
/// Invariants:
/// 1. `key_offsets.len() == id_offsets.len() == len() + 1`, both start at 0 and never
///    decrease; record `i`'s key is `keys[key_offsets[i]..key_offsets[i + 1]]` (whole
///    strings were pushed, so the bounds are char boundaries).
/// 2. `id_cols.len() == id_hashes.len() == id_offsets[len()]`; record `i`'s identifiers are
///    at `id_offsets[i]..id_offsets[i + 1]`, at least one per record, no (column, hash) twice.
/// 3. Every `id_cols[j]` indexes `columns`, and that column has an identifier kind.
/// 4. `data.len() == columns.len()`; value and segment columns hold `len()` entries.
/// 5. `persons.len() == len()`; equal codes mean the same person.
///
/// `Debug` prints metadata and counts only, never keys or values.
#[derive(Clone)]
pub struct Dataset {
    name: String,
    path: PathBuf,
    key_column: String,
    person_column: String,
    columns: Vec<ColumnConfig>,
    data: Vec<ColumnData>,
    persons: Vec<u32>,
    keys: String,
    key_offsets: Vec<usize>,
    id_offsets: Vec<usize>,
    id_cols: Vec<u16>,
    id_hashes: Vec<IdHash>,
    report: LoadReport,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("key_column", &self.key_column)
            .field("person_column", &self.person_column)
            .field("columns", &self.columns)
            .field("records", &self.len())
            .field("identifiers", &self.id_hashes.len())
            .field("report", &self.report)
            .finish()
    }
}

/// A declared column located in the CSV header.
struct Located {
    /// Index in the declared columns.
    declared: usize,
    /// Index in the CSV record.
    field: usize,
    kind: ColumnKind,
}

impl Dataset {
    /// Loads the CSV file of `cfg`, normalising identifiers with `normalizer`.
    ///
    /// Fails if the file cannot be read, its header lacks the key column or a declared
    /// column, or more than `cfg.max_bad_row_fraction` of its rows are bad.
    pub fn load(cfg: &DatasetConfig, normalizer: &Normalizer) -> Result<Dataset, NodeError> {
        let file = File::open(&cfg.path).map_err(|source| NodeError::DatasetRead {
            dataset: cfg.name.clone(),
            path: cfg.path.clone(),
            source,
        })?;
        Self::from_reader(cfg, normalizer, file)
    }

    fn from_reader<R: Read>(
        cfg: &DatasetConfig,
        normalizer: &Normalizer,
        reader: R,
    ) -> Result<Dataset, NodeError> {
        let read_err = |source: std::io::Error| NodeError::DatasetRead {
            dataset: cfg.name.clone(),
            path: cfg.path.clone(),
            source,
        };
        let header_err = |problem: String| NodeError::DatasetHeader {
            dataset: cfg.name.clone(),
            path: cfg.path.clone(),
            problem,
        };

        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .trim(csv::Trim::None)
            .delimiter(cfg.delimiter_byte())
            .from_reader(reader);

        // Header.
        let raw_header = match rdr.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                return Err(match e.into_kind() {
                    csv::ErrorKind::Io(io) => read_err(io),
                    _ => header_err(
                        "cannot read the CSV header row; the file must start with a header naming the columns"
                            .to_owned(),
                    ),
                });
            }
        };
        let mut header = Vec::with_capacity(raw_header.len());
        for (i, field) in raw_header.iter().enumerate() {
            let mut field = field;
            if i == 0 {
                field = field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field);
            }
            let name = std::str::from_utf8(field).map_err(|_| {
                header_err(format!(
                    "header field {} is not valid UTF-8; save the file as UTF-8",
                    i + 1
                ))
            })?;
            header.push(name.trim().to_owned());
        }
        if header.iter().all(String::is_empty) {
            return Err(header_err(
                "the file is empty or its header row is blank; the first line must name the columns"
                    .to_owned(),
            ));
        }

        let find = |column: &str, setting: &'static str| -> Result<usize, NodeError> {
            let mut hits = header.iter().enumerate().filter(|(_, h)| *h == column);
            match (hits.next(), hits.next()) {
                (Some((i, _)), None) => Ok(i),
                (None, _) => Err(NodeError::MissingColumn {
                    dataset: cfg.name.clone(),
                    path: cfg.path.clone(),
                    column: column.to_owned(),
                    header: describe_header(&header),
                    setting,
                }),
                (Some(_), Some(_)) => Err(header_err(format!(
                    "column '{column}' appears more than once in the CSV header; rename the duplicates"
                ))),
            }
        };
        let key_field = find(
            &cfg.key_column,
            "[[datasets]] key_column in the node config",
        )?;
        let person_column = cfg
            .person_column
            .clone()
            .unwrap_or_else(|| cfg.key_column.clone());
        let person_field = if person_column == cfg.key_column {
            None
        } else {
            Some(find(
                &person_column,
                "[[datasets]] person_column in the node config",
            )?)
        };
        let mut located = Vec::with_capacity(cfg.columns.len());
        for (declared, c) in cfg.columns.iter().enumerate() {
            let field = find(&c.name, "[[datasets.columns]] name in the node config")?;
            located.push(Located {
                declared,
                field,
                kind: c.kind,
            });
        }
        if cfg.columns.len() > usize::from(u16::MAX) {
            return Err(header_err(format!(
                "{} columns declared; at most {} are supported",
                cfg.columns.len(),
                u16::MAX
            )));
        }

        let mut ds = Dataset {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            key_column: cfg.key_column.clone(),
            person_column,
            columns: cfg.columns.clone(),
            data: cfg
                .columns
                .iter()
                .map(|c| match c.kind {
                    ColumnKind::Value => ColumnData::Value(Vec::new()),
                    ColumnKind::Segment => ColumnData::Segment(SegmentColumn::default()),
                    ColumnKind::Date => ColumnData::Date(Vec::new()),
                    ColumnKind::Email
                    | ColumnKind::Phone
                    | ColumnKind::Sha256
                    | ColumnKind::Maid => ColumnData::Identifier,
                })
                .collect(),
            persons: Vec::new(),
            keys: String::new(),
            key_offsets: vec![0],
            id_offsets: vec![0],
            id_cols: Vec::new(),
            id_hashes: Vec::new(),
            report: LoadReport::default(),
        };
        let mut segment_index: Vec<HashMap<String, u32>> = vec![HashMap::new(); cfg.columns.len()];
        let mut person_index: HashMap<String, u32> = HashMap::new();
        // Per declared column, sha256 values seen in (hex, base64).
        let mut encodings = vec![(0u64, 0u64); cfg.columns.len()];
        // Per declared column, its match-rate diagnostics if it is an identifier column.
        let mut id_diagnostics: Vec<Option<ColumnDiagnostics>> = cfg
            .columns
            .iter()
            .map(|c| c.kind.id_kind().map(|k| ColumnDiagnostics::new(&c.name, k)))
            .collect();

        // Rows are read in chunks; each chunk is parsed (normalised and hashed) in parallel,
        // then committed in file order so that examples and records keep the file's order.
        let mut report = LoadReport::default();
        let mut chunk: Vec<Item> = Vec::with_capacity(CHUNK_ROWS);
        let mut spare: Vec<csv::ByteRecord> = Vec::new();
        let mut done = false;
        while !done {
            while chunk.len() < CHUNK_ROWS {
                let mut record = spare.pop().unwrap_or_default();
                match rdr.read_byte_record(&mut record) {
                    Ok(true) => chunk.push(Item::Record(record)),
                    Ok(false) => {
                        done = true;
                        break;
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line);
                        let reason = match e.into_kind() {
                            csv::ErrorKind::Io(io) => return Err(read_err(io)),
                            csv::ErrorKind::UnequalLengths {
                                expected_len, len, ..
                            } => format!(
                                "wrong number of fields (header has {expected_len}, row has {len})"
                            ),
                            _ => "unreadable CSV record".to_owned(),
                        };
                        spare.push(record);
                        chunk.push(Item::Broken(line, reason));
                    }
                }
            }
            let parsed: Vec<Parsed> = chunk
                .par_iter()
                .map(|item| match item {
                    Item::Record(r) => {
                        let line = r.position().map_or(0, csv::Position::line);
                        let fields = Fields {
                            key: key_field,
                            person: person_field,
                            located: &located,
                        };
                        parse_row(r, line, &fields, &header, normalizer)
                    }
                    Item::Broken(line, reason) => Parsed {
                        line: *line,
                        row: Err(reason.clone()),
                        dropped: Vec::new(),
                        encodings: Vec::new(),
                    },
                })
                .collect();
            for p in parsed {
                report.rows_read += 1;
                for (col, e) in &p.encodings {
                    let n = &mut encodings[*col];
                    match e {
                        Sha256Encoding::Hex => n.0 += 1,
                        Sha256Encoding::Base64 => n.1 += 1,
                    }
                }
                for (field, reason) in p.dropped {
                    *report
                        .bad_identifiers
                        .entry((header[field].clone(), reason.to_owned()))
                        .or_insert(0) += 1;
                }
                match p.row {
                    Err(reason) => report.bad_row(p.line, reason),
                    Ok(row) => {
                        for (col, changes) in &row.changes {
                            if let Some(d) = &mut id_diagnostics[usize::from(*col)] {
                                d.record(*changes);
                            }
                        }
                        ds.push(row, &mut segment_index, &mut person_index);
                        report.rows_loaded += 1;
                    }
                }
            }
            spare.extend(chunk.drain(..).filter_map(|item| match item {
                Item::Record(r) => Some(r),
                Item::Broken(..) => None,
            }));
        }

        drop(person_index);
        if let Some((i, (hex, base64))) = encodings
            .iter()
            .enumerate()
            .find(|(_, (h, b))| *h > 0 && *b > 0)
        {
            return Err(NodeError::MixedEncoding {
                dataset: cfg.name.clone(),
                path: cfg.path.clone(),
                column: cfg.columns[i].name.clone(),
                hex: *hex,
                base64: *base64,
            });
        }
        if person_field.is_none() {
            ds.persons = ds.number_keys();
        }
        ds.persons.shrink_to_fit();
        ds.keys.shrink_to_fit();
        ds.key_offsets.shrink_to_fit();
        ds.id_offsets.shrink_to_fit();
        ds.id_cols.shrink_to_fit();
        ds.id_hashes.shrink_to_fit();

        let bad = report.bad_row_count();
        if report.rows_read > 0 && bad as f64 / report.rows_read as f64 > cfg.max_bad_row_fraction {
            return Err(NodeError::TooManyBadRows {
                dataset: cfg.name.clone(),
                path: cfg.path.clone(),
                rows_read: report.rows_read,
                bad_rows: bad,
                max_fraction: cfg.max_bad_row_fraction,
                example_lines: report.examples.iter().map(|(l, _)| *l).collect(),
                by_reason: report.bad_rows,
            });
        }
        for (col, duplicates) in ds.duplicates_per_column().into_iter().enumerate() {
            if let Some(d) = &mut id_diagnostics[col] {
                d.duplicates = duplicates;
            }
        }
        report.identifiers = id_diagnostics.into_iter().flatten().collect();
        tracing::info!(dataset = %cfg.name, path = %cfg.path.display(), "dataset loaded: {report}");
        ds.report = report;
        Ok(ds)
    }

    /// Numbers the records' keys: equal keys get equal codes (the person is the key).
    fn number_keys(&self) -> Vec<u32> {
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(self.len());
        (0..self.len())
            .map(|i| {
                let next = u32::try_from(index.len()).unwrap_or(u32::MAX);
                *index.entry(self.key(i)).or_insert(next)
            })
            .collect()
    }

    /// Per declared column, how many stored identifiers repeat a hash stored for an earlier
    /// record in the same column. Sorts an index of the stored identifiers (8 bytes each,
    /// freed on return); no value is copied.
    fn duplicates_per_column(&self) -> Vec<u64> {
        let entry = |j: usize| (self.id_cols[j], self.id_hashes[j]);
        let mut order: Vec<usize> = (0..self.id_hashes.len()).collect();
        order.par_sort_unstable_by_key(|&j| entry(j));
        let mut duplicates = vec![0u64; self.columns.len()];
        for pair in order.windows(2) {
            let (col, hash) = entry(pair[1]);
            if entry(pair[0]) == (col, hash) {
                duplicates[usize::from(col)] += 1;
            }
        }
        duplicates
    }

    /// Appends a good row (keeps the invariants).
    fn push(
        &mut self,
        row: Row,
        segment_index: &mut [HashMap<String, u32>],
        person_index: &mut HashMap<String, u32>,
    ) {
        if let Some(person) = row.person {
            let next = u32::try_from(person_index.len()).unwrap_or(u32::MAX);
            self.persons
                .push(*person_index.entry(person).or_insert(next));
        }
        self.keys.push_str(&row.key);
        self.key_offsets.push(self.keys.len());
        for (col, h) in row.ids {
            self.id_cols.push(col);
            self.id_hashes.push(h);
        }
        self.id_offsets.push(self.id_hashes.len());
        for (col, v) in row.values {
            if let ColumnData::Value(vs) = &mut self.data[col] {
                vs.push(v);
            }
        }
        for (col, t) in row.dates {
            if let ColumnData::Date(ts) = &mut self.data[col] {
                ts.push(t);
            }
        }
        for (col, s) in row.segments {
            if let ColumnData::Segment(seg) = &mut self.data[col] {
                let index = &mut segment_index[col];
                let code = match index.get(&s) {
                    Some(&code) => code,
                    None => {
                        let code = u32::try_from(seg.categories.len()).unwrap_or(u32::MAX);
                        seg.categories.push(s.clone());
                        index.insert(s, code);
                        code
                    }
                };
                seg.codes.push(code);
            }
        }
    }

    /// Dataset name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CSV file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name of the key column.
    pub fn key_column(&self) -> &str {
        &self.key_column
    }

    /// Number of records loaded.
    pub fn len(&self) -> usize {
        self.key_offsets.len() - 1
    }

    /// True if no record was loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What happened while loading.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Record `i`'s key, exactly as in the file. Panics if `i >= len()`.
    pub fn key(&self, i: usize) -> &str {
        &self.keys[self.key_offsets[i]..self.key_offsets[i + 1]]
    }

    /// The column naming each row's person (the privacy unit).
    pub fn person_column(&self) -> &str {
        &self.person_column
    }

    /// Per record, its person's code: records with the same code belong to the same person.
    pub fn persons(&self) -> &[u32] {
        &self.persons
    }

    /// The declared columns, in config order.
    pub fn columns(&self) -> &[ColumnConfig] {
        &self.columns
    }

    /// Names of the identifier columns (email, phone, sha256, maid), in config order.
    pub fn identifier_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.kind.is_identifier())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Identifiers stored over all records and identifier columns: an upper bound on the
    /// number of distinct identifiers any selection of columns yields.
    pub fn identifier_count(&self) -> usize {
        self.id_hashes.len()
    }

    /// Per record (in load order), the distinct identifiers found in `columns`; an empty
    /// slice means every identifier column. A record with no identifier in those columns
    /// gets an empty list.
    ///
    /// Fails if a name is not a declared column or not an identifier column.
    pub fn identifiers(&self, columns: &[String]) -> Result<Vec<Vec<IdHash>>, NodeError> {
        let selected = self.select_columns(columns)?;
        let mut out = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let range = self.id_offsets[i]..self.id_offsets[i + 1];
            let mut ids: Vec<IdHash> = Vec::with_capacity(range.len());
            for j in range {
                if selected[usize::from(self.id_cols[j])] {
                    let h = self.id_hashes[j];
                    if !ids.contains(&h) {
                        ids.push(h);
                    }
                }
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// Per declared column, whether it is among `columns` (empty = all identifier columns).
    fn select_columns(&self, columns: &[String]) -> Result<Vec<bool>, NodeError> {
        if columns.is_empty() {
            return Ok(self
                .columns
                .iter()
                .map(|c| c.kind.is_identifier())
                .collect());
        }
        let mut selected = vec![false; self.columns.len()];
        for name in columns {
            match self.columns.iter().position(|c| &c.name == name) {
                Some(i) if self.columns[i].kind.is_identifier() => selected[i] = true,
                Some(i) => {
                    return Err(self.not_identifier(name, self.columns[i].kind.as_str()));
                }
                None if *name == self.key_column => return Err(self.not_identifier(name, "key")),
                None => {
                    return Err(NodeError::UnknownColumn {
                        dataset: self.name.clone(),
                        column: name.clone(),
                        identifier_columns: self.identifier_column_names(),
                    });
                }
            }
        }
        Ok(selected)
    }

    fn not_identifier(&self, column: &str, kind: &'static str) -> NodeError {
        NodeError::NotIdentifierColumn {
            dataset: self.name.clone(),
            column: column.to_owned(),
            kind,
            identifier_columns: self.identifier_column_names(),
        }
    }

    fn identifier_column_names(&self) -> Vec<String> {
        self.identifier_columns()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The numbers of a value column, one per record; `None` if `column` is not a value column.
    pub fn values(&self, column: &str) -> Option<&[f64]> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        match &self.data[i] {
            ColumnData::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The instants of a date column, one per record, in milliseconds since the Unix epoch
    /// (UTC); `None` if `column` is not a date column.
    pub fn dates(&self, column: &str) -> Option<&[i64]> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        match &self.data[i] {
            ColumnData::Date(v) => Some(v),
            _ => None,
        }
    }

    /// The categories of a segment column; `None` if `column` is not a segment column.
    pub fn segments(&self, column: &str) -> Option<&SegmentColumn> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        match &self.data[i] {
            ColumnData::Segment(s) => Some(s),
            _ => None,
        }
    }

    /// The dataset's public description: name, column kinds, row count. No contents.
    pub fn info(&self) -> DatasetInfo {
        let mut columns = Vec::with_capacity(self.columns.len() + 1);
        columns.push(ColumnInfo {
            name: self.key_column.clone(),
            kind: "key".to_owned(),
        });
        columns.extend(self.columns.iter().map(|c| ColumnInfo {
            name: c.name.clone(),
            kind: c.kind.as_str().to_owned(),
        }));
        DatasetInfo {
            name: self.name.clone(),
            columns,
            row_count: self.report.rows_loaded,
        }
    }
}

/// A record as read, or why the CSV reader rejected it (line, reason).
enum Item {
    Record(csv::ByteRecord),
    Broken(u64, String),
}

/// Where the used fields are in a CSV record.
struct Fields<'a> {
    key: usize,
    /// The person column, when it is not the key column.
    person: Option<usize>,
    located: &'a [Located],
}

/// The fields of a good row.
struct Row {
    key: String,
    /// The person cell (trimmed), when the person column is not the key column.
    person: Option<String>,
    /// (declared column, number).
    values: Vec<(usize, f64)>,
    /// (declared column, trimmed category).
    segments: Vec<(usize, String)>,
    /// (declared column, ms since the epoch).
    dates: Vec<(usize, i64)>,
    /// (declared column, hash), no pair twice, at least one.
    ids: Vec<(u16, IdHash)>,
    /// (declared column, how normalisation changed it) of each valid identifier cell.
    changes: Vec<(u16, Changes)>,
}

/// A parsed record: the row or the reason it is bad, plus the identifiers dropped from it.
struct Parsed {
    line: u64,
    row: Result<Row, String>,
    /// (CSV field, reason) of each identifier that did not normalise.
    dropped: Vec<(usize, &'static str)>,
    /// (declared column, encoding) of each non-empty sha256 cell.
    encodings: Vec<(usize, Sha256Encoding)>,
}

/// Parses one record found at `line`.
fn parse_row(
    record: &csv::ByteRecord,
    line: u64,
    fields: &Fields<'_>,
    header: &[String],
    normalizer: &Normalizer,
) -> Parsed {
    let mut dropped = Vec::new();
    let row = parse_fields(record, fields, header, normalizer, &mut dropped);
    let encodings = fields
        .located
        .iter()
        .filter(|c| c.kind == ColumnKind::Sha256)
        .filter_map(|c| {
            let text = std::str::from_utf8(record.get(c.field)?).ok()?;
            Some((c.declared, Sha256Encoding::of(text)?))
        })
        .collect();
    Parsed {
        line,
        row,
        dropped,
        encodings,
    }
}

fn parse_fields(
    record: &csv::ByteRecord,
    fields: &Fields<'_>,
    header: &[String],
    normalizer: &Normalizer,
    dropped: &mut Vec<(usize, &'static str)>,
) -> Result<Row, String> {
    let located = fields.located;
    let cell = |field: usize| -> Result<&str, String> {
        let bytes = record.get(field).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|_| {
            let column = header.get(field).map_or("?", String::as_str);
            format!("invalid UTF-8 in column '{column}'")
        })
    };

    let key = cell(fields.key)?;
    if key.trim().is_empty() {
        return Err(REASON_MISSING_KEY.to_owned());
    }
    let person = match fields.person {
        None => None,
        Some(field) => {
            let p = cell(field)?.trim();
            if p.is_empty() {
                return Err(REASON_MISSING_PERSON.to_owned());
            }
            Some(p.to_owned())
        }
    };
    let mut row = Row {
        key: key.to_owned(),
        person,
        values: Vec::new(),
        segments: Vec::new(),
        dates: Vec::new(),
        ids: Vec::with_capacity(located.len()),
        changes: Vec::with_capacity(located.len()),
    };
    for c in located {
        match c.kind {
            ColumnKind::Value => {
                let text = cell(c.field)?;
                match text.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => row.values.push((c.declared, v)),
                    _ => {
                        return Err(format!("invalid value in column '{}'", header[c.field]));
                    }
                }
            }
            ColumnKind::Segment => {
                row.segments
                    .push((c.declared, cell(c.field)?.trim().to_owned()));
            }
            ColumnKind::Date => {
                let text = cell(c.field)?;
                match parse_timestamp(text.trim()) {
                    Some(t) => row.dates.push((c.declared, t)),
                    None => {
                        return Err(format!(
                            "invalid date in column '{}' (expected ISO 8601, e.g. 2026-11-30 \
                             or 2026-11-30T14:05:00Z)",
                            header[c.field]
                        ));
                    }
                }
            }
            ColumnKind::Email | ColumnKind::Phone | ColumnKind::Sha256 | ColumnKind::Maid => {}
        }
    }
    for c in located {
        let Some(kind) = c.kind.id_kind() else {
            continue;
        };
        let text = cell(c.field)?;
        if text.trim().is_empty() {
            continue;
        }
        // `located` has at most u16::MAX entries (checked at load).
        let col = u16::try_from(c.declared).unwrap_or(u16::MAX);
        match diagnostics::identifier(normalizer, kind, text) {
            Ok((h, changes)) => {
                if !row.ids.contains(&(col, h)) {
                    row.ids.push((col, h));
                }
                row.changes.push((col, changes));
            }
            Err(e) => dropped.push((c.field, e.reason())),
        }
    }
    if row.ids.is_empty() {
        return Err(REASON_NO_IDENTIFIER.to_owned());
    }
    Ok(row)
}

/// An ISO 8601 date or date-time as milliseconds since the Unix epoch (UTC): `YYYY-MM-DD`
/// (midnight UTC), `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z` or a `±HH:MM` offset, or without an
/// offset (read as UTC); a space may stand for the `T`. `None` for anything else, including
/// impossible dates such as `2026-02-30`.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    use time::format_description::well_known::Iso8601;
    use time::macros::format_description;
    use time::{Date, OffsetDateTime, PrimitiveDateTime};
    let text = if text.len() > 10 && text.as_bytes()[10] == b' ' {
        std::borrow::Cow::Owned(format!("{}T{}", &text[..10], &text[11..]))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let ms = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    if let Ok(d) = Date::parse(&text, format_description!("[year]-[month]-[day]")) {
        return ms(d.midnight().assume_utc());
    }
    if let Ok(t) = OffsetDateTime::parse(&text, &Iso8601::DEFAULT) {
        return ms(t);
    }
    PrimitiveDateTime::parse(&text, &Iso8601::DEFAULT)
        .ok()
        .and_then(|t| ms(t.assume_utc()))
}

/// The header's names, comma-separated, for an error message. Names that look like data
/// (an `@`, five or more digits, or very long) are redacted: a file without a header row
/// would otherwise put its first record into the message.
fn describe_header(header: &[String]) -> String {
    const SHOWN: usize = 50;
    let mut redacted = false;
    let mut parts: Vec<String> = header
        .iter()
        .take(SHOWN)
        .map(|h| {
            let digits = h.bytes().filter(u8::is_ascii_digit).count();
            if h.contains('@') || digits >= 5 || h.chars().count() > 48 {
                redacted = true;
                "<redacted>".to_owned()
            } else {
                h.escape_debug().to_string()
            }
        })
        .collect();
    if header.len() > SHOWN {
        parts.push(format!("… {} more", header.len() - SHOWN));
    }
    let mut out = parts.join(", ");
    if redacted {
        out.push_str("; <redacted> fields look like data: does the file start with a header row?");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Change;
    use parley_crypto::normalize::{IdKind, Profile};
    use std::io::Write as _;

    fn normalizer() -> Normalizer {
        Normalizer::new(Profile::Google, "US").expect("normalizer")
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: DatasetConfig,
    }

    fn fixture(csv: &[u8], columns: &[(&str, ColumnKind)], fraction: f64) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crm.csv");
        let mut f = File::create(&path).expect("create");
        f.write_all(csv).expect("write");
        let cfg = DatasetConfig {
            name: "crm".to_owned(),
            path,
            key_column: "id".to_owned(),
            person_column: None,
            max_bad_row_fraction: fraction,
            delimiter: None,
            budget: None,
            columns: columns
                .iter()
                .map(|(name, kind)| ColumnConfig {
                    name: (*name).to_owned(),
                    kind: *kind,
                })
                .collect(),
        };
        Fixture { _dir: dir, cfg }
    }

    fn load(
        csv: &[u8],
        columns: &[(&str, ColumnKind)],
        fraction: f64,
    ) -> Result<Dataset, NodeError> {
        let fx = fixture(csv, columns, fraction);
        Dataset::load(&fx.cfg, &normalizer())
    }

    const EP: &[(&str, ColumnKind)] = &[("email", ColumnKind::Email), ("phone", ColumnKind::Phone)];

    fn email(raw: &str) -> IdHash {
        normalizer()
            .identifier(IdKind::Email, raw)
            .expect("valid email")
    }

    fn phone(raw: &str) -> IdHash {
        normalizer()
            .identifier(IdKind::Phone, raw)
            .expect("valid phone")
    }

    /// Raw cell contents used in the messy fixture; none may appear in any message.
    const SECRETS: &[&str] = &[
        "alice@example.com",
        "bob@@example",
        "not-an-email",
        "12",
        "k-secret-4",
        "carol@example",
        "dave.secret@example.org",
        "abc",
        "NaN",
        "inf",
    ];

    #[test]
    fn good_rows_load() {
        let csv = b"id,email,phone,amount,region\n\
            1,Alice@Example.com,(650) 253-0000,12.5,north\n\
            2,bob@example.org,,3,south\n\
            3,,+44 20 7946 0958,0,north\n";
        let cols = &[
            ("email", ColumnKind::Email),
            ("phone", ColumnKind::Phone),
            ("amount", ColumnKind::Value),
            ("region", ColumnKind::Segment),
        ];
        let ds = load(csv, cols, 0.0).expect("loads");
        assert_eq!(ds.name(), "crm");
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.key(0), "1");
        assert_eq!(ds.key(2), "3");
        assert_eq!(ds.identifier_columns(), vec!["email", "phone"]);
        let r = ds.report();
        assert_eq!((r.rows_read, r.rows_loaded, r.bad_row_count()), (3, 3, 0));
        assert_eq!(r.bad_identifier_count(), 0);

        let all = ds.identifiers(&[]).expect("all");
        assert_eq!(
            all[0],
            vec![email("alice@example.com"), phone("+16502530000")]
        );
        assert_eq!(all[1], vec![email("bob@example.org")]);
        assert_eq!(all[2], vec![phone("+442079460958")]);
        let emails = ds.identifiers(&["email".to_owned()]).expect("emails");
        assert_eq!(emails[2], Vec::<IdHash>::new());
        assert_eq!(emails[0], vec![email("alice@example.com")]);

        assert_eq!(ds.values("amount"), Some(&[12.5, 3.0, 0.0][..]));
        let seg = ds.segments("region").expect("segment column");
        assert_eq!(seg.categories(), &["north".to_owned(), "south".to_owned()]);
        assert_eq!(seg.get(2), "north");
        assert!(ds.values("region").is_none());

        let info = ds.info();
        assert_eq!(info.name, "crm");
        assert_eq!(info.row_count, 3);
        let kinds: Vec<(&str, &str)> = info
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("id", "key"),
                ("email", "email"),
                ("phone", "phone"),
                ("amount", "value"),
                ("region", "segment")
            ]
        );
    }

    #[test]
    fn messy_identifiers_are_counted_and_bad_rows_have_line_numbers() {
        let csv = b"id,email,phone\n\
            1,alice@example.com,12\n\
            2,bob@@example,\n\
            ,dave.secret@example.org,6502530000\n\
            k-secret-4,not-an-email,650-253-0001\n\
            5,,\n\
            6,carol@example,abc\n";
        let fx = fixture(csv, EP, 1.0);
        let ds = Dataset::load(&fx.cfg, &normalizer()).expect("loads with fraction 1");
        let r = ds.report().clone();
        assert_eq!(r.rows_read, 6);
        assert_eq!(r.rows_loaded, 2);
        assert_eq!(ds.key(0), "1");
        assert_eq!(ds.key(1), "k-secret-4");
        assert_eq!(r.bad_rows.get(REASON_MISSING_KEY), Some(&1));
        assert_eq!(r.bad_rows.get(REASON_NO_IDENTIFIER), Some(&3));
        assert_eq!(
            r.examples,
            vec![
                (3, REASON_NO_IDENTIFIER.to_owned()),
                (4, REASON_MISSING_KEY.to_owned()),
                (6, REASON_NO_IDENTIFIER.to_owned()),
                (7, REASON_NO_IDENTIFIER.to_owned()),
            ]
        );
        assert_eq!(
            r.bad_identifiers
                .get(&("email".to_owned(), "invalid email".to_owned())),
            Some(&3)
        );
        assert_eq!(
            r.bad_identifiers
                .get(&("phone".to_owned(), "invalid phone".to_owned())),
            Some(&2)
        );

        let text = r.to_string();
        assert!(text.contains("6 rows read, 2 loaded, 4 bad"), "{text}");
        assert!(text.contains("first at lines 3, 4, 6, 7"), "{text}");
        assert_no_secrets(&text);
        assert_no_secrets(&format!("{r:?}"));
        assert_no_secrets(&format!("{ds:?}"));

        // Same file with the default limit fails, naming file, counts, lines and the fix.
        let mut strict = fx.cfg.clone();
        strict.max_bad_row_fraction = 0.01;
        let err = Dataset::load(&strict, &normalizer()).expect_err("must fail");
        assert!(matches!(
            err,
            NodeError::TooManyBadRows {
                bad_rows: 4,
                rows_read: 6,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("crm.csv"), "{msg}");
        assert!(msg.contains("4 of 6 rows are bad"), "{msg}");
        assert!(
            msg.contains("missing key: 1, no valid identifier: 3"),
            "{msg}"
        );
        assert!(msg.contains("first at lines 3, 4, 6, 7"), "{msg}");
        assert!(msg.contains("max_bad_row_fraction"), "{msg}");
        assert_no_secrets(&msg);
        assert_no_secrets(&format!("{err:?}"));
    }

    fn assert_no_secrets(text: &str) {
        for s in SECRETS {
            // "12" and "abc" are short; check them as whole tokens.
            let hit = if s.len() <= 3 {
                text.split(|c: char| !c.is_alphanumeric()).any(|t| t == *s)
            } else {
                text.contains(s)
            };
            assert!(!hit, "'{s}' leaked into: {text}");
        }
    }

    #[test]
    fn identifier_columns_report_valid_duplicate_and_changed_counts() {
        let h = hex::encode(email("x@example.com").0);
        let hu = h.to_uppercase();
        let csv = format!(
            "id,email,phone,maid,hashed\n\
             1, Alice@Example.com ,(650) 253-0000,6BA7B810-9DAD-11D1-80B4-00C04FD430C8,{h}\n\
             2,alice@example.com,+16502530000,6ba7b810-9dad-11d1-80b4-00c04fd430c8,{h}\n\
             3,John.Doe+x@gmail.com,12,,{hu}\n\
             4,bob@@example,650-253-0001,,\n\
             5,carol@example.org,+16502530002,,\n\
             ,dave.secret@example.org,(650) 253-0003,,\n"
        );
        let cols = &[
            ("email", ColumnKind::Email),
            ("phone", ColumnKind::Phone),
            ("maid", ColumnKind::Maid),
            ("hashed", ColumnKind::Sha256),
        ];
        let ds = load(csv.as_bytes(), cols, 0.5).expect("loads");
        let r = ds.report();
        assert_eq!((r.rows_read, r.rows_loaded), (6, 5));

        // Counted over the rows loaded: row 6 (no key) is not.
        let [em, ph, maid, hashed] = &r.identifiers[..] else {
            panic!("four identifier columns: {:?}", r.identifiers);
        };
        assert_eq!((em.column.as_str(), em.kind), ("email", IdKind::Email));
        assert_eq!((em.valid, em.duplicates, em.changed), (4, 1, 2));
        assert_eq!(
            [Change::Case, Change::Whitespace, Change::GmailRules].map(|c| em.changed_by(c)),
            [2, 1, 1]
        );
        assert_eq!(em.changed_by(Change::Formatting), 0);
        assert_eq!((ph.valid, ph.duplicates, ph.changed), (4, 1, 2));
        assert_eq!(ph.changed_by(Change::Formatting), 2);
        assert_eq!((maid.valid, maid.duplicates, maid.changed), (2, 1, 1));
        assert_eq!((hashed.valid, hashed.duplicates, hashed.changed), (3, 2, 0));
        assert_eq!(
            r.invalid_identifiers("email").collect::<Vec<_>>(),
            [("invalid email", 1)]
        );

        let lines = r.identifier_lines();
        assert_eq!(
            lines,
            [
                "column 'email': 4 valid, 1 invalid (invalid email: 1), 1 duplicate; \
                 50% changed (case 50%, whitespace 25%, gmail dots or +suffix 25%)",
                "column 'phone': 4 valid, 1 invalid (invalid phone: 1), 1 duplicate; \
                 50% changed (formatting 50%)",
                "column 'maid': 2 valid, 0 invalid, 1 duplicate; 50% changed (formatting 50%)",
                "column 'hashed': 3 valid, 0 invalid, 2 duplicates",
            ]
        );
        for text in lines.iter().chain([&format!("{r:?}"), &r.to_string()]) {
            assert_no_secrets(text);
            for raw in [
                "Alice", "alice@", "John.Doe", "253-0000", "6BA7B810", "6ba7b810", &h, &hu,
            ] {
                assert!(!text.contains(raw), "'{raw}' leaked into: {text}");
            }
        }
    }

    #[test]
    fn csv_errors_are_bad_rows_with_line_numbers() {
        let mut csv = b"id,email\n1,a@example.com\n2,b@example.com,extra\n3\n".to_vec();
        csv.extend_from_slice(b"4,\xff\xfe@example.com\n5,e@example.com\n");
        let ds = load(&csv, &[("email", ColumnKind::Email)], 1.0).expect("loads");
        let r = ds.report();
        assert_eq!((r.rows_read, r.rows_loaded), (5, 2));
        assert_eq!(
            r.examples,
            vec![
                (
                    3,
                    "wrong number of fields (header has 2, row has 3)".to_owned()
                ),
                (
                    4,
                    "wrong number of fields (header has 2, row has 1)".to_owned()
                ),
                (5, "invalid UTF-8 in column 'email'".to_owned()),
            ]
        );
        assert_eq!(ds.key(1), "5");
    }

    #[test]
    fn invalid_values_make_bad_rows() {
        let csv = b"id,email,amount\n1,a@example.com,1.5\n2,b@example.com,NaN\n3,c@example.com,inf\n4,d@example.com,\n5,e@example.com, 7 \n";
        let ds = load(
            csv,
            &[("email", ColumnKind::Email), ("amount", ColumnKind::Value)],
            1.0,
        )
        .expect("loads");
        let r = ds.report();
        assert_eq!(r.bad_rows.get("invalid value in column 'amount'"), Some(&3));
        assert_eq!(ds.values("amount"), Some(&[1.5, 7.0][..]));
        assert_no_secrets(&r.to_string());
    }

    #[test]
    fn missing_columns_are_named_with_the_header() {
        let csv = b"id,email,phone\n1,a@example.com,\n";
        let err = load(csv, &[("emial", ColumnKind::Email)], 0.01).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("column 'emial' declared in the node config is not in the CSV header (header has: id, email, phone); fix [[datasets.columns]] name"),
            "{msg}"
        );
        let csv = b"customer,email\n1,a@example.com\n";
        let err = load(csv, &[("email", ColumnKind::Email)], 0.01).expect_err("must fail");
        assert!(
            matches!(err, NodeError::MissingColumn { ref column, setting, .. } if column == "id" && setting.contains("key_column"))
        );
    }

    #[test]
    fn headerless_file_does_not_leak_its_first_row() {
        let csv = b"1001,alice@example.com,6502530000\n1002,bob@example.org,\n";
        let err = load(csv, EP, 0.01).expect_err("must fail");
        let msg = err.to_string();
        assert!(!msg.contains("alice"), "{msg}");
        assert!(!msg.contains("6502530000"), "{msg}");
        assert!(msg.contains("header row"), "{msg}");
    }

    #[test]
    fn empty_file_and_missing_file() {
        let err = load(b"", EP, 0.01).expect_err("must fail");
        assert!(matches!(err, NodeError::DatasetHeader { .. }), "{err}");
        let cfg = DatasetConfig {
            name: "crm".to_owned(),
            path: PathBuf::from("/nonexistent/crm.csv"),
            key_column: "id".to_owned(),
            person_column: None,
            max_bad_row_fraction: 0.01,
            delimiter: None,
            budget: None,
            columns: vec![],
        };
        let msg = Dataset::load(&cfg, &normalizer())
            .expect_err("must fail")
            .to_string();
        assert!(
            msg.starts_with("dataset 'crm' (/nonexistent/crm.csv): cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn header_only_file_loads_empty() {
        let ds = load(b"id,email,phone\n", EP, 0.01).expect("loads");
        assert!(ds.is_empty());
        assert_eq!(ds.identifiers(&[]).expect("ids").len(), 0);
    }

    #[test]
    fn bom_delimiter_and_header_spaces() {
        let csv = "\u{feff}id; email \n1;a@example.com\n".as_bytes();
        let mut fx = fixture(csv, &[("email", ColumnKind::Email)], 0.0);
        fx.cfg.delimiter = Some(';');
        let ds = Dataset::load(&fx.cfg, &normalizer()).expect("loads");
        assert_eq!(ds.len(), 1);
        assert_eq!(
            ds.identifiers(&[]).expect("ids")[0],
            vec![email("a@example.com")]
        );
    }

    #[test]
    fn iso_dates_and_datetimes_parse_to_utc_milliseconds() {
        const DAY: i64 = 86_400_000;
        let d = parse_timestamp("2026-11-30").expect("date");
        assert_eq!(d % DAY, 0);
        // Days from 1970-01-01 to 2026-11-30, as Python's datetime counts them.
        assert_eq!(d / DAY, 20_787);
        let at = d + (14 * 60 + 5) * 60_000;
        for text in [
            "2026-11-30T14:05:00Z",
            "2026-11-30T14:05:00",
            "2026-11-30 14:05:00",
            "2026-11-30T15:05:00+01:00",
            "2026-11-30T14:05:00.000Z",
        ] {
            assert_eq!(parse_timestamp(text), Some(at), "{text}");
        }
        assert_eq!(parse_timestamp("2026-11-30T14:05:00.250Z"), Some(at + 250));
        for bad in [
            "",
            "30/11/2026",
            "2026-13-01",
            "2026-02-30",
            "2026-11-30T25:00:00Z",
            "yesterday",
            "2026-11-3é 1",
            "1732924800",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_sha256_column_in_two_encodings_fails_to_load_by_name() {
        use base64::Engine as _;
        let digest = email("jane@example.com").0;
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let hex = hex::encode(digest);
        let cols = &[("hashed", ColumnKind::Sha256)];
        // One encoding per column loads, either one.
        for v in [&hex, &b64] {
            let csv = format!("id,hashed\n1,{v}\n2,{v}\n");
            let ds = load(csv.as_bytes(), cols, 0.0).expect("loads");
            assert_eq!(ds.identifiers(&[]).expect("ids")[0], vec![IdHash(digest)]);
        }
        let csv = format!("id,hashed\n1,{hex}\n2,{hex}\n3,{b64}\n");
        let err = load(csv.as_bytes(), cols, 0.0).expect_err("must fail");
        let text = err.to_string();
        assert!(
            matches!(err, NodeError::MixedEncoding { ref column, hex: 2, base64: 1, .. } if column == "hashed"),
            "{text}"
        );
        assert!(text.contains("2 values in hex and 1 in base64"), "{text}");
        assert!(!text.contains(&b64) && !text.contains(&hex), "{text}");
    }

    #[test]
    fn date_columns_load_and_bad_dates_are_bad_rows() {
        let csv = b"id,email,bought\n1,a@example.com,2026-11-30\n2,b@example.com,2026-11-30T12:00:00Z\n3,c@example.com,30/11/2026\n";
        let ds = load(
            csv,
            &[("email", ColumnKind::Email), ("bought", ColumnKind::Date)],
            0.5,
        )
        .expect("loads");
        assert_eq!(ds.len(), 2);
        let dates = ds.dates("bought").expect("date column");
        assert_eq!(dates[1] - dates[0], 12 * 3_600_000);
        assert_eq!(ds.dates("email"), None);
        let report = ds.report();
        assert_eq!(report.bad_row_count(), 1);
        let reason = report.bad_rows.keys().next().expect("a reason");
        assert!(
            reason.contains("invalid date in column 'bought'"),
            "{reason}"
        );
        // The reason names the column and the expected form, never the cell.
        assert!(!reason.contains("30/11"), "{reason}");
        assert_eq!(ds.info().columns[2].kind, "date");
    }

    #[test]
    fn persons_come_from_the_person_column_or_the_key() {
        let csv = b"id,customer,email\n1,c7,a@example.com\n2,c7,b@example.com\n3, c9 ,c@example.com\n4,,d@example.com\n1,c9,e@example.com\n";
        // By default the key is the person: keys 1, 2, 3, 1 (row 4 has a key too).
        let by_key = load(csv, &[("email", ColumnKind::Email)], 0.5).expect("loads");
        assert_eq!(by_key.person_column(), "id");
        assert_eq!(by_key.persons(), [0, 1, 2, 3, 0]);
        // With a person column: c7, c7, c9 (trimmed), and row 4 is bad.
        let mut fx = fixture(csv, &[("email", ColumnKind::Email)], 0.5);
        fx.cfg.person_column = Some("customer".to_owned());
        let ds = Dataset::load(&fx.cfg, &normalizer()).expect("loads");
        assert_eq!(ds.person_column(), "customer");
        assert_eq!(ds.persons(), [0, 0, 1, 1]);
        assert_eq!(ds.len(), 4);
        assert_eq!(ds.report().bad_row_count(), 1);
        assert!(
            ds.report()
                .bad_rows
                .keys()
                .any(|r| r.contains(REASON_MISSING_PERSON)),
            "{:?}",
            ds.report()
        );
        // A person column missing from the header names the setting.
        fx.cfg.person_column = Some("household".to_owned());
        let err = Dataset::load(&fx.cfg, &normalizer()).unwrap_err();
        assert!(err.to_string().contains("person_column"), "{err}");
    }

    #[test]
    fn identifiers_are_deduplicated_within_a_record() {
        // Same person twice through Gmail rules, and the same hash in two columns.
        let h = hex::encode(email("john@gmail.com").0);
        let csv = format!(
            "id,email,email2,hashed\n1,John.Doe+x@gmail.com,johndoe@gmail.com,{h}\n2,john@gmail.com,john@gmail.com,{h}\n"
        );
        let cols = &[
            ("email", ColumnKind::Email),
            ("email2", ColumnKind::Email),
            ("hashed", ColumnKind::Sha256),
        ];
        let ds = load(csv.as_bytes(), cols, 0.0).expect("loads");
        let all = ds.identifiers(&[]).expect("all");
        assert_eq!(
            all[0],
            vec![email("johndoe@gmail.com"), email("john@gmail.com")]
        );
        assert_eq!(all[1], vec![email("john@gmail.com")]);
        let two = ds
            .identifiers(&["email2".to_owned(), "email".to_owned()])
            .expect("two columns");
        assert_eq!(two[0], vec![email("johndoe@gmail.com")]);
        assert_eq!(two[1], vec![email("john@gmail.com")]);
    }

    #[test]
    fn identifiers_rejects_unknown_and_non_identifier_columns() {
        let csv = b"id,email,amount\n1,a@example.com,3\n";
        let ds = load(
            csv,
            &[("email", ColumnKind::Email), ("amount", ColumnKind::Value)],
            0.0,
        )
        .expect("loads");
        let err = ds
            .identifiers(&["phone".to_owned()])
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "dataset 'crm' has no column 'phone' (identifier columns: email); use one of those"
        );
        let err = ds
            .identifiers(&["amount".to_owned()])
            .expect_err("must fail");
        assert!(
            err.to_string().contains("'amount' is a value column"),
            "{err}"
        );
        let err = ds.identifiers(&["id".to_owned()]).expect_err("must fail");
        assert!(err.to_string().contains("'id' is a key column"), "{err}");
    }

    #[test]
    #[ignore]
    /// Load time and memory for 10^6 rows: `cargo test -p parley-node --release -- --ignored --nocapture`.
    fn perf_million() {
        let mut csv = String::from("id,email,phone\n");
        for i in 0..1_000_000u32 {
            csv.push_str(&format!(
                "cust{i},user{i}@example.com,+1 650 {:03} {:04}\n",
                i % 1000,
                i % 10000
            ));
        }
        let t = std::time::Instant::now();
        let ds = load(csv.as_bytes(), EP, 0.01).expect("loads");
        eprintln!("load {:?} {}", t.elapsed(), ds.report());
        let bytes = ds.keys.capacity()
            + ds.key_offsets.capacity() * 8
            + ds.id_offsets.capacity() * 8
            + ds.id_cols.capacity() * 2
            + ds.id_hashes.capacity() * 32;
        eprintln!("bytes {}", bytes);
        let t = std::time::Instant::now();
        let ids = ds.identifiers(&[]).expect("ids");
        eprintln!("identifiers {:?} {}", t.elapsed(), ids.len());
    }

    #[test]
    fn fraction_boundary() {
        // 1 bad row of 4 = 0.25: allowed at 0.25, refused at 0.24.
        let csv = b"id,email\n1,a@example.com\n2,b@example.com\n3,c@example.com\n,d@example.com\n";
        assert!(load(csv, &[("email", ColumnKind::Email)], 0.25).is_ok());
        assert!(matches!(
            load(csv, &[("email", ColumnKind::Email)], 0.24),
            Err(NodeError::TooManyBadRows { .. })
        ));
    }
}
