//! The leads read models: the admin list/detail (`leads`), the timeline (`lead_history`),
//! and the queries the admin panel runs on them.
//!
//! Personal data arrives sealed; the projection opens it with the lead's data key inside its
//! own transaction. A shredded key (KVKK erasure) opens to nothing and the fields read
//! [`ERASED`], during live processing and in every later rebuild alike.

use aggregates::lead::{LeadEvent, LeadStatus, SealedText};
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use eventstore::sealing::{KeyRing, Sealed, Sealer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{BoxFuture, Projection, ProjectionError, pg_json, pg_text, pg_text_opt, rfc3339};

pub const NAME: &str = "leads";
/// What erased personal data reads as.
pub const ERASED: &str = "[silindi]";

/// The personal part of a submission, sealed as one JSON value in `LeadCreated` /
/// `LeadResubmitted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Personal {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub company: Option<String>,
    pub message: Option<String>,
    /// Where a landing submission came from: the submitter's address and browser are
    /// personal data of the lead, so they are sealed with the rest and shredded with it,
    /// never written to the event's clear metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, rename = "userAgent", skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// The data-key subject of a lead.
pub fn subject(lead_id: Uuid) -> String {
    format!("lead:{lead_id}")
}

/// Lower-case and fold Turkish letters to ASCII, so `kaya` finds `KAYA SMMM` and `isik`
/// finds `Işık`.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'İ' | 'I' | 'ı' | 'Î' | 'î' => folded.push('i'),
            'Ş' | 'ş' => folded.push('s'),
            'Ğ' | 'ğ' => folded.push('g'),
            'Ü' | 'ü' | 'Û' | 'û' => folded.push('u'),
            'Ö' | 'ö' => folded.push('o'),
            'Ç' | 'ç' => folded.push('c'),
            'Â' | 'â' => folded.push('a'),
            other => folded.extend(other.to_lowercase()),
        }
    }
    folded
}

pub struct LeadsProjection {
    sealer: Sealer,
}

impl LeadsProjection {
    pub fn new(sealer: Sealer) -> Self {
        Self { sealer }
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        ring: &KeyRing,
        lead_id: Uuid,
        sealed: &SealedText,
        event: &StoredEvent,
    ) -> Result<Option<T>, ProjectionError> {
        ring.open_json(&subject(lead_id), &Sealed::from(sealed.0.clone()))
            .map_err(|e| ProjectionError::event(event, e))
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        tx: &mut PgConnection,
        ring: &KeyRing,
        event: &StoredEvent,
        lead_id: Uuid,
        lead_event: &LeadEvent,
        created: &mut CreatedBatch,
        history: &mut HistoryBatch,
    ) -> Result<(), ProjectionError> {
        if !matches!(lead_event, LeadEvent::LeadCreated { .. }) {
            // Every other event changes a row that may still wait in the batch.
            created.flush(tx).await?;
        }
        let at = event.recorded_at;
        let position = event.global_position();
        let actor = event.metadata.actor.clone();
        let (action, details): (&str, Value) = match lead_event {
            LeadEvent::LeadCreated {
                personal,
                source,
                utm_source,
                utm_campaign,
                submission_id,
            } => {
                let p: Option<Personal> = self.open(ring, lead_id, personal, event)?;
                let p = storable(p.unwrap_or_else(erased_personal));
                created.push(CreatedRow {
                    id: lead_id,
                    search: search_text(&p),
                    erased: p.name == ERASED,
                    personal: p,
                    source: source.as_str(),
                    utm_source: pg_text_opt(utm_source.as_deref()).map(|t| t.into_owned()),
                    utm_campaign: pg_text_opt(utm_campaign.as_deref()).map(|t| t.into_owned()),
                    at,
                    position,
                });
                (
                    "created",
                    json!({"source": source.as_str(), "utmSource": utm_source, "utmCampaign": utm_campaign,
                           "submissionId": submission_id}),
                )
            }
            LeadEvent::LeadResubmitted {
                personal,
                utm_source,
                utm_campaign,
                submission_id,
            } => {
                let p: Option<Personal> = self.open(ring, lead_id, personal, event)?;
                let message = p
                    .as_ref()
                    .map_or(Some(ERASED.to_string()), |p| p.message.clone());
                self.touch(
                    tx,
                    lead_id,
                    at,
                    position,
                    "resubmissions = resubmissions + 1,",
                )
                .await?;
                (
                    "resubmitted",
                    json!({"message": message, "utmSource": utm_source, "utmCampaign": utm_campaign,
                           "submissionId": submission_id}),
                )
            }
            LeadEvent::LeadStatusChanged { from, to } => {
                sqlx::query("UPDATE leads SET status = $2, updated_at = $3, last_position = $4 WHERE id = $1")
                    .bind(lead_id)
                    .bind(to.as_str())
                    .bind(at)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                (
                    "status_changed",
                    json!({"from": from.as_str(), "to": to.as_str()}),
                )
            }
            LeadEvent::LeadAssigned { assignee } => {
                sqlx::query("UPDATE leads SET assigned_to = $2, updated_at = $3, last_position = $4 WHERE id = $1")
                    .bind(lead_id)
                    .bind(pg_text_opt(assignee.as_deref()))
                    .bind(at)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                ("assigned", json!({"assignedTo": assignee}))
            }
            LeadEvent::LeadNotesSet { notes } => {
                let text: Option<String> = match notes {
                    Some(sealed) => Some(
                        self.open::<String>(ring, lead_id, sealed, event)?
                            .map_or_else(|| ERASED.into(), |t| pg_text(&t).into_owned()),
                    ),
                    None => None,
                };
                sqlx::query("UPDATE leads SET notes = $2, updated_at = $3, last_position = $4 WHERE id = $1")
                    .bind(lead_id)
                    .bind(&text)
                    .bind(at)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                ("note_added", json!({"notes": text}))
            }
            LeadEvent::LeadActivityLogged {
                kind,
                note,
                occurred_at,
            } => {
                let text = self
                    .open::<String>(ring, lead_id, note, event)?
                    .unwrap_or_else(|| ERASED.into());
                self.touch(tx, lead_id, at, position, "").await?;
                (
                    "activity_logged",
                    json!({"type": kind.as_str(), "note": text, "occurredAt": rfc3339(*occurred_at)}),
                )
            }
            LeadEvent::LeadConverted { license_id } => {
                sqlx::query("UPDATE leads SET status = 'converted', updated_at = $2, last_position = $3 WHERE id = $1")
                    .bind(lead_id)
                    .bind(at)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                ("converted", json!({"licenseId": license_id}))
            }
            LeadEvent::LeadErased => {
                // Entries still waiting in the batch must be in the table to be redacted.
                history.flush(tx).await?;
                sqlx::query(
                    "UPDATE leads SET name = $2, email = $2, phone = $2,
                            company = CASE WHEN company IS NULL THEN NULL ELSE $2 END,
                            message = CASE WHEN message IS NULL THEN NULL ELSE $2 END,
                            notes = CASE WHEN notes IS NULL THEN NULL ELSE $2 END,
                            search = '', erased = true, updated_at = $3, last_position = $4
                      WHERE id = $1",
                )
                .bind(lead_id)
                .bind(ERASED)
                .bind(at)
                .bind(position)
                .execute(&mut *tx)
                .await?;
                // Personal values inside earlier timeline entries go too.
                sqlx::query(
                    "UPDATE lead_history
                        SET details = (SELECT coalesce(jsonb_object_agg(k, CASE
                                                  WHEN k IN ('notes', 'note', 'message') AND v <> 'null'::jsonb
                                                  THEN to_jsonb($2::text) ELSE v END), '{}'::jsonb)
                                         FROM jsonb_each(details) AS d(k, v))
                      WHERE lead_id = $1",
                )
                .bind(lead_id)
                .bind(ERASED)
                .execute(&mut *tx)
                .await?;
                ("erased", json!({}))
            }
        };
        let actor = actor.map(|a| pg_text(&a).into_owned());
        history.push(
            lead_id,
            event.sequence as i64,
            action,
            at,
            actor,
            pg_json(details),
        );
        Ok(())
    }

    async fn touch(
        &self,
        tx: &mut PgConnection,
        lead_id: Uuid,
        at: DateTime<Utc>,
        position: i64,
        // Extra assignments, each ending in a comma ("" for none).
        extra: &'static str,
    ) -> Result<(), ProjectionError> {
        sqlx::query(&format!(
            "UPDATE leads SET {extra} updated_at = $2, last_position = $3 WHERE id = $1"
        ))
        .bind(lead_id)
        .bind(at)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl Projection for LeadsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            // Decode the page first, so that one query fetches the data keys of all its leads.
            let mut decoded = Vec::with_capacity(events.len());
            for event in events {
                if event.stream.aggregate_type != "lead" {
                    continue;
                }
                let lead_id: Uuid = event
                    .stream
                    .aggregate_id
                    .parse()
                    .map_err(|e| ProjectionError::event(event, e))?;
                let lead_event: LeadEvent = serde_json::from_value(event.payload.clone())
                    .map_err(|e| ProjectionError::event(event, e))?;
                decoded.push((event, lead_id, lead_event));
            }
            let mut subjects: Vec<String> = decoded
                .iter()
                .filter(|(_, _, e)| carries_sealed(e))
                .map(|(_, id, _)| subject(*id))
                .collect();
            subjects.sort_unstable();
            subjects.dedup();
            // A database error here is the page's; a sealing error is a database error too
            // (the ring only reads), so the first event names it.
            let ring = match self.sealer.key_ring(tx, &subjects).await {
                Ok(ring) => ring,
                Err(e) => return Err(ProjectionError::event(decoded[0].0, e)),
            };
            let mut created = CreatedBatch::default();
            let mut history = HistoryBatch::default();
            for (event, lead_id, lead_event) in &decoded {
                self.apply_one(
                    tx,
                    &ring,
                    event,
                    *lead_id,
                    lead_event,
                    &mut created,
                    &mut history,
                )
                .await?;
            }
            created.flush(tx).await?;
            history.flush(tx).await
        })
    }
}

/// Whether the event holds a sealed value the projection opens.
fn carries_sealed(event: &LeadEvent) -> bool {
    matches!(
        event,
        LeadEvent::LeadCreated { .. }
            | LeadEvent::LeadResubmitted { .. }
            | LeadEvent::LeadNotesSet { notes: Some(_) }
            | LeadEvent::LeadActivityLogged { .. }
    )
}

/// A lead row as `LeadCreated` makes it.
struct CreatedRow {
    id: Uuid,
    personal: Personal,
    search: String,
    erased: bool,
    source: &'static str,
    utm_source: Option<String>,
    utm_campaign: Option<String>,
    at: DateTime<Utc>,
    position: i64,
}

/// New lead rows of a page, inserted with one statement: at the end of the page, or before
/// any other event that might change one of them.
#[derive(Default)]
struct CreatedBatch {
    rows: Vec<CreatedRow>,
}

impl CreatedBatch {
    fn push(&mut self, row: CreatedRow) {
        self.rows.push(row);
    }

    async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let n = rows.len();
        let (mut ids, mut names, mut emails, mut phones) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut companies, mut messages, mut sources, mut utm_sources, mut utm_campaigns) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut searches, mut erased, mut ats, mut positions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            ids.push(r.id);
            names.push(r.personal.name);
            emails.push(r.personal.email);
            phones.push(r.personal.phone);
            companies.push(r.personal.company);
            messages.push(r.personal.message);
            sources.push(r.source);
            utm_sources.push(r.utm_source);
            utm_campaigns.push(r.utm_campaign);
            searches.push(r.search);
            erased.push(r.erased);
            ats.push(r.at);
            positions.push(r.position);
        }
        // Arrays, not a multi-row VALUES: one statement text whatever the page holds.
        sqlx::query(
            "INSERT INTO leads (id, name, email, phone, company, message, source, utm_source,
                                utm_campaign, status, search, erased, created_at, updated_at, last_position)
             SELECT id, name, email, phone, company, message, source, utm_source, utm_campaign,
                    'new', search, erased, at, at, position
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[],
                           $12::timestamptz[], $13::bigint[])
                    AS r(id, name, email, phone, company, message, source, utm_source,
                         utm_campaign, search, erased, at, position)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(names)
        .bind(emails)
        .bind(phones)
        .bind(companies)
        .bind(messages)
        .bind(sources)
        .bind(utm_sources)
        .bind(utm_campaigns)
        .bind(searches)
        .bind(erased)
        .bind(ats)
        .bind(positions)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Timeline entries of a page, written with one statement at the end of the page instead of
/// one per event.
#[derive(Default)]
struct HistoryBatch {
    lead_ids: Vec<Uuid>,
    sequences: Vec<i64>,
    actions: Vec<&'static str>,
    ats: Vec<DateTime<Utc>>,
    actors: Vec<Option<String>>,
    details: Vec<Value>,
}

impl HistoryBatch {
    fn push(
        &mut self,
        lead_id: Uuid,
        sequence: i64,
        action: &'static str,
        at: DateTime<Utc>,
        actor: Option<String>,
        details: Value,
    ) {
        self.lead_ids.push(lead_id);
        self.sequences.push(sequence);
        self.actions.push(action);
        self.ats.push(at);
        self.actors.push(actor);
        self.details.push(details);
    }

    async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.lead_ids.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(self);
        sqlx::query(
            "INSERT INTO lead_history (lead_id, sequence, action, at, actor, details)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[],
                                  $5::text[], $6::jsonb[])
             ON CONFLICT DO NOTHING",
        )
        .bind(batch.lead_ids)
        .bind(batch.sequences)
        .bind(batch.actions)
        .bind(batch.ats)
        .bind(batch.actors)
        .bind(batch.details)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Personal data as the tables can hold it (see [`pg_text`]).
fn storable(p: Personal) -> Personal {
    let own = |s: &str| pg_text(s).into_owned();
    Personal {
        name: own(&p.name),
        email: own(&p.email),
        phone: own(&p.phone),
        company: p.company.as_deref().map(own),
        message: p.message.as_deref().map(own),
        ..p
    }
}

fn erased_personal() -> Personal {
    Personal {
        name: ERASED.into(),
        email: ERASED.into(),
        phone: ERASED.into(),
        company: Some(ERASED.into()),
        message: Some(ERASED.into()),
        ip: None,
        user_agent: None,
    }
}

fn search_text(p: &Personal) -> String {
    if p.name == ERASED {
        return String::new();
    }
    fold(&format!(
        "{} {} {} {}",
        p.name,
        p.email,
        p.phone,
        p.company.as_deref().unwrap_or("")
    ))
}

// ---------------------------------------------------------------------------------------
// Queries.

/// A row of the `leads` table as the admin API shows it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct LeadRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub company: Option<String>,
    pub message: Option<String>,
    pub source: String,
    pub utm_source: Option<String>,
    pub utm_campaign: Option<String>,
    pub status: String,
    pub assigned_to: Option<String>,
    pub notes: Option<String>,
    pub erased: bool,
    pub resubmissions: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LeadRow {
    /// The lead as the admin API and the live feed show it (seed 000/001 shape).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "company": self.company,
            "message": self.message,
            "source": self.source,
            "utmSource": self.utm_source,
            "utmCampaign": self.utm_campaign,
            "status": self.status,
            "assignedTo": self.assigned_to,
            "notes": self.notes,
            "erased": self.erased,
            "resubmissions": self.resubmissions,
            "createdAt": rfc3339(self.created_at),
            "updatedAt": rfc3339(self.updated_at),
        })
    }
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct HistoryRow {
    pub sequence: i64,
    pub action: String,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub details: Value,
}

impl HistoryRow {
    pub fn to_json(&self) -> Value {
        json!({"action": self.action, "at": rfc3339(self.at), "by": self.actor, "details": self.details})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    CreatedAt,
    UpdatedAt,
    Name,
    Status,
}

impl SortBy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "createdAt" => Some(Self::CreatedAt),
            "updatedAt" => Some(Self::UpdatedAt),
            "name" => Some(Self::Name),
            "status" => Some(Self::Status),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Name => "lower(name)",
            Self::Status => "status",
        }
    }
}

/// Filters of the admin list and the CSV export.
#[derive(Clone, Debug, Default)]
pub struct LeadFilter {
    pub status: Option<LeadStatus>,
    pub search: Option<String>,
    pub assigned_to: Option<String>,
    pub source: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl LeadFilter {
    fn push_where(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(" WHERE true");
        if let Some(status) = self.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(pattern) = self.search.as_deref().and_then(crate::contains_pattern) {
            q.push(" AND search LIKE ").push_bind(pattern);
        }
        if let Some(assigned) = &self.assigned_to {
            q.push(" AND assigned_to = ").push_bind(assigned.clone());
        }
        if let Some(source) = &self.source {
            q.push(" AND source = ").push_bind(source.clone());
        }
        if let Some(from) = self.from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            q.push(" AND created_at <= ").push_bind(to);
        }
    }
}

const LEAD_COLUMNS: &str =
    "id, name, email, phone, company, message, source, utm_source, utm_campaign, status,
                            assigned_to, notes, erased, resubmissions, created_at, updated_at";

/// One page of leads and the total that match.
pub async fn list(
    pool: &PgPool,
    filter: &LeadFilter,
    sort: SortBy,
    descending: bool,
    page: i64,
    limit: i64,
) -> Result<(Vec<LeadRow>, i64), sqlx::Error> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM leads");
    filter.push_where(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    let mut q = QueryBuilder::new(format!("SELECT {LEAD_COLUMNS} FROM leads"));
    filter.push_where(&mut q);
    let order = if descending { "DESC" } else { "ASC" };
    q.push(format!(" ORDER BY {} {order}, id {order}", sort.column()));
    q.push(" LIMIT ").push_bind(limit);
    q.push(" OFFSET ").push_bind((page - 1) * limit);
    let rows = q.build_query_as::<LeadRow>().fetch_all(pool).await?;
    Ok((rows, total))
}

/// Every lead matching `filter`, oldest first (CSV export).
pub async fn all(pool: &PgPool, filter: &LeadFilter) -> Result<Vec<LeadRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(format!("SELECT {LEAD_COLUMNS} FROM leads"));
    filter.push_where(&mut q);
    q.push(" ORDER BY created_at, id");
    q.build_query_as::<LeadRow>().fetch_all(pool).await
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<LeadRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Several leads by id, in one query (the live feed maps a batch at a time).
pub async fn get_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<LeadRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
}

pub async fn history(pool: &PgPool, id: Uuid) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as("SELECT sequence, action, at, actor, details FROM lead_history WHERE lead_id = $1 ORDER BY sequence")
        .bind(id)
        .fetch_all(pool)
        .await
}

/// The pipeline board: per status, the count and the newest `cards_per_column` leads.
pub async fn board(
    pool: &PgPool,
    cards_per_column: i64,
) -> Result<Vec<(LeadStatus, i64, Vec<LeadRow>)>, sqlx::Error> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM leads GROUP BY status")
            .fetch_all(pool)
            .await?;
    let mut columns = Vec::new();
    for status in LeadStatus::ALL {
        let count = counts
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        let cards = sqlx::query_as(&format!(
            "SELECT {LEAD_COLUMNS} FROM leads WHERE status = $1 ORDER BY updated_at DESC, id LIMIT $2"
        ))
        .bind(status.as_str())
        .bind(cards_per_column)
        .fetch_all(pool)
        .await?;
        columns.push((status, count, cards));
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folding_makes_turkish_text_searchable_in_ascii() {
        assert_eq!(fold("Kaya SMMM"), "kaya smmm");
        assert_eq!(fold("IŞIK Çağrı Öğüt"), "isik cagri ogut");
        assert_eq!(fold("İSTANBUL"), "istanbul");
        assert!(fold("Ahmet Kaya ahmet@kayasmmm.com").contains(&fold("KAYA")));
    }
}
