//! Leads end to end on the command side: the landing form, the admin pipeline, timeline
//! activities and KVKK erasure. Reads come from the `leads` projection
//! (`projections::leads`); every write waits for it before answering (read-your-writes).

pub mod contact;
mod csv;
mod routes;

use aggregates::lead::{
    ActivityKind, Lead, LeadCommand, LeadError, LeadEvent, LeadSource, LeadStatus, SealedText,
};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::sealing::Sealer;
use eventstore::{CommandError, CommandHandler, Cursor, Metadata};
use projections::leads::{Personal, subject};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AppError;

pub use routes::{admin_router, landing_router, lead_detail};

/// How long a submission may spend meeting concurrent submissions of the same contact.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(5);
/// A reservation whose lead does not exist yet belongs to a creator still at work for this
/// long; after it, the creator is presumed dead and the reservation is taken over.
const CREATOR_GRACE: Duration = Duration::from_secs(10);

/// A landing submission after validation.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The id the submitter is answered with; it names this submission, never the lead.
    pub id: Uuid,
    pub personal: Personal,
    pub source: LeadSource,
    pub utm_source: Option<String>,
    pub utm_campaign: Option<String>,
}

/// What a submission became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub lead_id: Uuid,
    pub submission_id: Uuid,
    /// false: it landed on an existing open lead as a resubmission.
    pub created: bool,
    pub cursor: Option<Cursor>,
}

/// The command side of leads.
pub struct LeadService {
    pool: PgPool,
    sealer: Sealer,
    handler: CommandHandler<Lead>,
}

impl LeadService {
    pub fn new(pool: PgPool, sealer: Sealer, handler: CommandHandler<Lead>) -> Self {
        Self {
            pool,
            sealer,
            handler,
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Creates a lead, or adds a resubmission to the open lead that already has this e-mail
    /// or phone. Two concurrent submissions of one contact meet at the `lead_contacts`
    /// reservation, so only one of them creates.
    ///
    /// A new lead costs one commit: the reservation, the lead's data key and `LeadCreated`
    /// are written in one transaction. A concurrent submission of the same contact waits at
    /// the reservation's row until that commit and then finds a lead that exists; a crash or
    /// error before it leaves no reservation, no key and no event behind.
    pub async fn submit(
        &self,
        submission: Submission,
        metadata: &Metadata,
    ) -> Result<Submitted, AppError> {
        let digests = self.contact_digests(&submission.personal);
        let deadline = Instant::now() + SUBMIT_DEADLINE;
        while Instant::now() < deadline {
            let new_id = Uuid::now_v7();
            let mut tx = self.pool.begin().await?;
            let rows: Vec<(Uuid, bool)> = sqlx::query_as(
                "INSERT INTO lead_contacts (digest, lead_id) SELECT d, $2 FROM unnest($1::text[]) AS d
                 ON CONFLICT (digest) DO UPDATE SET digest = EXCLUDED.digest
                 RETURNING lead_id, (xmax = 0) AS inserted",
            )
            .bind(&digests)
            .bind(new_id)
            .fetch_all(&mut *tx)
            .await?;
            let existing = rows
                .iter()
                .find(|(_, inserted)| !inserted)
                .map(|(id, _)| *id);
            let Some(existing) = existing else {
                return self.create(tx, new_id, &submission, metadata).await;
            };
            if rows.iter().any(|(_, inserted)| *inserted) {
                // The part of the contact that was new joins the lead that owns the rest.
                sqlx::query("UPDATE lead_contacts SET lead_id = $1 WHERE lead_id = $2")
                    .bind(existing)
                    .bind(new_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            } else {
                // Nothing to keep: a rollback spares the commit's WAL flush.
                tx.rollback().await?;
            }
            let (lead, _) = self.handler.load(&existing.to_string()).await?;
            if !lead.exists() {
                // Reservations commit with their lead, so this is one left by a creator that
                // predates that (or by an instance still running older code): wait for a
                // creator that may be at work; take over from one that is surely gone.
                if self.reservation_age(existing).await? < CREATOR_GRACE {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            } else if !lead.is_erased() && lead.status().is_open() {
                // Only seal for a lead that can take it: sealing would otherwise mint a fresh
                // key for an erased lead.
                let personal = self.seal_personal(existing, &submission.personal).await?;
                let command = LeadCommand::Resubmit {
                    personal,
                    utm_source: submission.utm_source.clone(),
                    utm_campaign: submission.utm_campaign.clone(),
                    submission_id: Some(submission.id),
                };
                match self
                    .handler
                    .execute(&existing.to_string(), command, metadata)
                    .await
                {
                    Ok(outcome) => {
                        return Ok(Submitted {
                            lead_id: existing,
                            submission_id: submission.id,
                            created: false,
                            cursor: outcome.cursor(),
                        });
                    }
                    Err(CommandError::Domain(LeadError::Closed(_) | LeadError::Erased)) => {}
                    Err(e) => return Err(command_error(e)),
                }
            }
            // A stale reservation (the lead closed, or its creator crashed): drop it and retry.
            self.release(existing).await?;
        }
        Err(AppError::concurrent_modification())
    }

    /// Seals the personal data under a new key and appends `LeadCreated`, in the
    /// transaction that holds the contact's fresh reservation; commits all three at once.
    async fn create(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        lead_id: Uuid,
        submission: &Submission,
        metadata: &Metadata,
    ) -> Result<Submitted, AppError> {
        // The id was minted a moment ago: no key to look up, no stream to load.
        let sealed = self
            .sealer
            .seal_json_new_in(&mut tx, &subject(lead_id), &submission.personal)
            .await
            .map_err(AppError::internal)?;
        let command = LeadCommand::Create {
            personal: SealedText(sealed.to_string()),
            source: submission.source,
            utm_source: submission.utm_source.clone(),
            utm_campaign: submission.utm_campaign.clone(),
            submission_id: Some(submission.id),
        };
        let outcome = self
            .handler
            .execute_new_in(&mut tx, &lead_id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        tx.commit().await?;
        self.handler.store().notify_appended();
        Ok(Submitted {
            lead_id,
            submission_id: submission.id,
            created: true,
            cursor: outcome.cursor(),
        })
    }

    async fn seal_personal(
        &self,
        lead_id: Uuid,
        personal: &Personal,
    ) -> Result<SealedText, AppError> {
        let sealed = self
            .sealer
            .seal_json(&subject(lead_id), personal)
            .await
            .map_err(AppError::internal)?;
        Ok(SealedText(sealed.to_string()))
    }

    async fn seal_text(&self, lead_id: Uuid, text: &str) -> Result<SealedText, AppError> {
        let sealed = self
            .sealer
            .seal_json(&subject(lead_id), &text)
            .await
            .map_err(AppError::internal)?;
        Ok(SealedText(sealed.to_string()))
    }

    async fn reservation_age(&self, lead_id: Uuid) -> Result<Duration, AppError> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(created_at))::float8 FROM lead_contacts WHERE lead_id = $1",
        )
        .bind(lead_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Duration::from_secs_f64(
            seconds.unwrap_or(f64::MAX).clamp(0.0, 1e9),
        ))
    }

    /// Frees the lead's contact reservations (it closed or was erased).
    async fn release(&self, lead_id: Uuid) -> Result<(), AppError> {
        sqlx::query("DELETE FROM lead_contacts WHERE lead_id = $1")
            .bind(lead_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Loads the lead, refusing unknown and erased ones before anything is sealed.
    async fn live(&self, lead_id: Uuid) -> Result<Lead, AppError> {
        let (lead, _) = self.handler.load(&lead_id.to_string()).await?;
        if !lead.exists() {
            return Err(lead_error(LeadError::NotFound));
        }
        if lead.is_erased() {
            return Err(lead_error(LeadError::Erased));
        }
        Ok(lead)
    }

    /// The admin PATCH: status, assignee and notes together.
    pub async fn update(
        &self,
        lead_id: Uuid,
        status: Option<LeadStatus>,
        assignee: Option<Option<String>>,
        notes: Option<Option<String>>,
        metadata: &Metadata,
    ) -> Result<Option<Cursor>, AppError> {
        let notes = match notes {
            Some(Some(text)) => {
                self.live(lead_id).await?;
                Some(Some(self.seal_text(lead_id, &text).await?))
            }
            Some(None) => Some(None),
            None => None,
        };
        let command = LeadCommand::Update {
            status,
            assignee,
            notes,
        };
        let outcome = self
            .handler
            .execute(&lead_id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        let reopened = outcome.events.iter().any(|e| {
            matches!(e, LeadEvent::LeadStatusChanged { from, to } if !from.is_open() && to.is_open())
        });
        if !outcome.aggregate.status().is_open() {
            self.release(lead_id).await?;
        } else if reopened {
            self.reserve_again(lead_id).await?;
        }
        Ok(outcome.cursor())
    }

    /// The keyed digests under which a contact is reserved (never the values in clear).
    fn contact_digests(&self, personal: &Personal) -> Vec<String> {
        vec![
            self.sealer.digest(&format!("email:{}", personal.email)),
            self.sealer.digest(&format!("phone:{}", personal.phone)),
        ]
    }

    /// A lost lead that is worked again owns its contact again (unless another open lead took
    /// it meanwhile), so new submissions land on it. The contact is read from its creation.
    async fn reserve_again(&self, lead_id: Uuid) -> Result<(), AppError> {
        let stream = CommandHandler::<Lead>::stream(&lead_id.to_string());
        let Some(first) = self
            .handler
            .store()
            .read_stream(&stream)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let Ok(LeadEvent::LeadCreated { personal, .. }) = serde_json::from_value(first.payload)
        else {
            return Ok(());
        };
        let sealed = eventstore::sealing::Sealed::from(personal.0);
        let Some(contact) = self
            .sealer
            .open_json::<Personal>(&subject(lead_id), &sealed)
            .await
            .map_err(AppError::internal)?
        else {
            return Ok(()); // erased meanwhile
        };
        let digests = self.contact_digests(&contact);
        sqlx::query(
            "INSERT INTO lead_contacts (digest, lead_id) SELECT d, $2 FROM unnest($1::text[]) AS d
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&digests)
        .bind(lead_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn log_activity(
        &self,
        lead_id: Uuid,
        kind: ActivityKind,
        note: &str,
        occurred_at: DateTime<Utc>,
        metadata: &Metadata,
    ) -> Result<Option<Cursor>, AppError> {
        self.live(lead_id).await?;
        let note = self.seal_text(lead_id, note).await?;
        let command = LeadCommand::LogActivity {
            kind,
            note,
            occurred_at,
        };
        let outcome = self
            .handler
            .execute(&lead_id.to_string(), command, metadata)
            .await
            .map_err(command_error)?;
        Ok(outcome.cursor())
    }

    /// KVKK erasure. The key goes first: if the append then fails, the data is already
    /// unreadable and a retry records `LeadErased` (both steps are idempotent).
    pub async fn erase(
        &self,
        lead_id: Uuid,
        metadata: &Metadata,
    ) -> Result<Option<Cursor>, AppError> {
        let (lead, _) = self.handler.load(&lead_id.to_string()).await?;
        if !lead.exists() {
            return Err(lead_error(LeadError::NotFound));
        }
        self.sealer
            .shred(&subject(lead_id))
            .await
            .map_err(AppError::internal)?;
        self.release(lead_id).await?;
        let outcome = self
            .handler
            .execute(&lead_id.to_string(), LeadCommand::Erase, metadata)
            .await
            .map_err(command_error)?;
        Ok(outcome.cursor())
    }
}

/// The one place lead errors become HTTP answers.
pub fn lead_error(e: LeadError) -> AppError {
    use axum::http::StatusCode;
    match e {
        LeadError::NotFound => {
            AppError::new(StatusCode::NOT_FOUND, "LEAD_NOT_FOUND", "Lead bulunamadı.")
        }
        LeadError::AlreadyExists => {
            AppError::new(StatusCode::CONFLICT, "LEAD_EXISTS", "Lead zaten mevcut.")
        }
        LeadError::Erased => AppError::new(
            StatusCode::GONE,
            "LEAD_ERASED",
            "Bu lead'in kişisel verileri silindi.",
        ),
        LeadError::AlreadyConverted => AppError::new(
            StatusCode::CONFLICT,
            "LEAD_ALREADY_CONVERTED",
            "Lead zaten lisansa dönüştürüldü; durumu değiştirilemez.",
        ),
        LeadError::ConvertedOnlyThroughConversion => AppError::validation(
            "status",
            "'converted' durumuna yalnızca lisans dönüşümü ile geçilebilir.",
        ),
        LeadError::InvalidTransition { from, to } => AppError::validation(
            "status",
            format!(
                "Durum '{}' → '{}' geçişi yapılamaz.",
                from.as_str(),
                to.as_str()
            ),
        ),
        LeadError::Closed(status) => AppError::new(
            StatusCode::CONFLICT,
            "LEAD_CLOSED",
            format!("Lead kapalı ({}).", status.as_str()),
        ),
    }
}

fn command_error(e: CommandError<LeadError>) -> AppError {
    match e {
        CommandError::Domain(e) => lead_error(e),
        CommandError::Conflict(_) => AppError::concurrent_modification(),
        CommandError::Store(e) => e.into(),
    }
}
