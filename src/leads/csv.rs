//! CSV export of leads, safe to open in a spreadsheet — also the Turkish Excel that most
//! accounting offices use: the document starts with a UTF-8 byte-order mark (without it
//! Excel reads `Çağlar` as `Ã‡aÄŸlar`), and `?delimiter=semicolon` gives the `;`-separated
//! variant that a Turkish-locale Excel splits into columns on double-click. In either
//! variant a cell holding `,` or `;` is quoted, so no locale splits it into a new cell that
//! could start a formula.

use projections::leads::LeadRow;

const HEADER: [&str; 14] = [
    "id",
    "name",
    "email",
    "phone",
    "company",
    "message",
    "source",
    "utmSource",
    "utmCampaign",
    "status",
    "assignedTo",
    "notes",
    "createdAt",
    "updatedAt",
];

/// What separates cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimiter {
    Comma,
    Semicolon,
}

impl Delimiter {
    /// `comma` (`,`, the default) or `semicolon` (`;`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "comma" | "," => Some(Self::Comma),
            "semicolon" | ";" => Some(Self::Semicolon),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Comma => ",",
            Self::Semicolon => ";",
        }
    }
}

/// One CSV document (RFC 4180, CRLF, UTF-8 with a byte-order mark) with a header row.
pub fn render(rows: &[LeadRow], delimiter: Delimiter) -> String {
    let mut out = String::from("\u{FEFF}");
    push_row(&mut out, HEADER.iter().map(|h| h.to_string()), delimiter);
    for r in rows {
        push_row(
            &mut out,
            [
                r.id.to_string(),
                r.name.clone(),
                r.email.clone(),
                r.phone.clone(),
                r.company.clone().unwrap_or_default(),
                r.message.clone().unwrap_or_default(),
                r.source.clone(),
                r.utm_source.clone().unwrap_or_default(),
                r.utm_campaign.clone().unwrap_or_default(),
                r.status.clone(),
                r.assigned_to.clone().unwrap_or_default(),
                r.notes.clone().unwrap_or_default(),
                crate::time::rfc3339(r.created_at),
                crate::time::rfc3339(r.updated_at),
            ]
            .into_iter(),
            delimiter,
        );
    }
    out
}

fn push_row(out: &mut String, cells: impl Iterator<Item = String>, delimiter: Delimiter) {
    let cells: Vec<String> = cells.map(|c| quote(&neutralise(&c))).collect();
    out.push_str(&cells.join(delimiter.as_str()));
    out.push_str("\r\n");
}

/// A cell a spreadsheet would run as a formula (`= + - @`, also after a tab or CR) gets a
/// leading apostrophe (OWASP CSV injection advice). Phone numbers start with `+` and get it
/// too; spreadsheets show them as text, which is what they are.
fn neutralise(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

fn quote(cell: &str) -> String {
    if cell.contains([',', ';', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_quoting_follows_rfc4180() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("-2+3"), "'-2+3");
        assert_eq!(neutralise("Kaya SMMM"), "Kaya SMMM");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("a;=1+1"), "\"a;=1+1\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
