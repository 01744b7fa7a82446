//! The lead's decisions. State holds only what the rules need.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use super::{LeadCommand, LeadError, LeadEvent, LeadStatus};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Lead {
    created: bool,
    status: LeadStatus,
    assignee: Option<String>,
    has_notes: bool,
    erased: bool,
}

impl Lead {
    pub fn status(&self) -> LeadStatus {
        self.status
    }

    pub fn exists(&self) -> bool {
        self.created
    }

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    fn live(&self) -> Result<(), LeadError> {
        if !self.created {
            Err(LeadError::NotFound)
        } else if self.erased {
            Err(LeadError::Erased)
        } else {
            Ok(())
        }
    }

    fn decide(&self, command: LeadCommand) -> Result<Vec<LeadEvent>, LeadError> {
        use LeadCommand as C;
        use LeadEvent as E;
        if let C::Create {
            personal,
            source,
            utm_source,
            utm_campaign,
            submission_id,
        } = command
        {
            if self.created {
                return Err(LeadError::AlreadyExists);
            }
            return Ok(vec![E::LeadCreated {
                personal,
                source,
                utm_source,
                utm_campaign,
                submission_id,
            }]);
        }
        if matches!(command, C::Erase) && self.erased {
            return Ok(vec![]); // erasing twice changes nothing
        }
        self.live()?;
        Ok(match command {
            C::Create { .. } => unreachable!("handled above"),
            C::Resubmit {
                personal,
                utm_source,
                utm_campaign,
                submission_id,
            } => {
                if !self.status.is_open() {
                    return Err(LeadError::Closed(self.status));
                }
                vec![E::LeadResubmitted {
                    personal,
                    utm_source,
                    utm_campaign,
                    submission_id,
                }]
            }
            C::ChangeStatus { status } => {
                if self.status == LeadStatus::Converted {
                    return Err(LeadError::AlreadyConverted);
                }
                if status == LeadStatus::Converted {
                    return Err(LeadError::ConvertedOnlyThroughConversion);
                }
                if status == self.status {
                    return Ok(vec![]);
                }
                // `new` is where leads enter; a worked lead does not go back there.
                if status == LeadStatus::New {
                    return Err(LeadError::InvalidTransition {
                        from: self.status,
                        to: status,
                    });
                }
                vec![E::LeadStatusChanged {
                    from: self.status,
                    to: status,
                }]
            }
            C::Assign { assignee } => {
                if assignee == self.assignee {
                    return Ok(vec![]);
                }
                vec![E::LeadAssigned { assignee }]
            }
            C::SetNotes { notes } => {
                if notes.is_none() && !self.has_notes {
                    return Ok(vec![]);
                }
                vec![E::LeadNotesSet { notes }]
            }
            C::LogActivity {
                kind,
                note,
                occurred_at,
            } => {
                vec![E::LeadActivityLogged {
                    kind,
                    note,
                    occurred_at,
                }]
            }
            C::MarkConverted { license_id } => {
                if self.status == LeadStatus::Converted {
                    return Err(LeadError::AlreadyConverted);
                }
                vec![E::LeadConverted { license_id }]
            }
            C::Update {
                status,
                assignee,
                notes,
            } => {
                // The parts touch disjoint state, so deciding each against the current state
                // and concatenating is the same as deciding them in sequence.
                let mut events = Vec::new();
                if let Some(status) = status {
                    events.extend(self.decide(C::ChangeStatus { status })?);
                }
                if let Some(assignee) = assignee {
                    events.extend(self.decide(C::Assign { assignee })?);
                }
                if let Some(notes) = notes {
                    events.extend(self.decide(C::SetNotes { notes })?);
                }
                events
            }
            C::Erase => vec![E::LeadErased],
        })
    }
}

impl Aggregate for Lead {
    const TYPE: &'static str = "lead";
    type Command = LeadCommand;
    type Event = LeadEvent;
    type Error = LeadError;
    type Services = ();

    async fn handle(
        &mut self,
        command: LeadCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), LeadError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: LeadEvent) {
        match event {
            LeadEvent::LeadCreated { .. } => {
                self.created = true;
                self.status = LeadStatus::New;
            }
            LeadEvent::LeadResubmitted { .. } | LeadEvent::LeadActivityLogged { .. } => {}
            LeadEvent::LeadStatusChanged { to, .. } => self.status = to,
            LeadEvent::LeadAssigned { assignee } => self.assignee = assignee,
            LeadEvent::LeadNotesSet { notes } => self.has_notes = notes.is_some(),
            LeadEvent::LeadConverted { .. } => self.status = LeadStatus::Converted,
            LeadEvent::LeadErased => self.erased = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    use super::*;
    use crate::lead::{ActivityKind, LeadSource, SealedText};

    type Given = TestFramework<Lead>;

    fn sealed(s: &str) -> SealedText {
        SealedText(format!("v1.test.{s}"))
    }

    fn created() -> LeadEvent {
        LeadEvent::LeadCreated {
            personal: sealed("p"),
            source: LeadSource::LandingPage,
            utm_source: Some("google".into()),
            utm_campaign: None,
            submission_id: None,
        }
    }

    fn status(from: LeadStatus, to: LeadStatus) -> LeadEvent {
        LeadEvent::LeadStatusChanged { from, to }
    }

    #[test]
    fn a_landing_submission_creates_a_new_lead() {
        Given::with(())
            .given_no_previous_events()
            .when(LeadCommand::Create {
                personal: sealed("p"),
                source: LeadSource::LandingPage,
                utm_source: Some("google".into()),
                utm_campaign: None,
                submission_id: None,
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_lead_is_created_once() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::Create {
                personal: sealed("p"),
                source: LeadSource::LandingPage,
                utm_source: None,
                utm_campaign: None,
                submission_id: None,
            })
            .then_expect_error(LeadError::AlreadyExists);
    }

    #[test]
    fn commands_on_a_missing_lead_are_not_found() {
        Given::with(())
            .given_no_previous_events()
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::Contacted,
            })
            .then_expect_error(LeadError::NotFound);
    }

    #[test]
    fn an_open_lead_takes_a_resubmission() {
        Given::with(())
            .given(vec![
                created(),
                status(LeadStatus::New, LeadStatus::Contacted),
            ])
            .when(LeadCommand::Resubmit {
                personal: sealed("q"),
                utm_source: None,
                utm_campaign: None,
                submission_id: None,
            })
            .then_expect_events(vec![LeadEvent::LeadResubmitted {
                personal: sealed("q"),
                utm_source: None,
                utm_campaign: None,
                submission_id: None,
            }]);
    }

    #[test]
    fn a_lost_lead_takes_no_resubmission() {
        Given::with(())
            .given(vec![created(), status(LeadStatus::New, LeadStatus::Lost)])
            .when(LeadCommand::Resubmit {
                personal: sealed("q"),
                utm_source: None,
                utm_campaign: None,
                submission_id: None,
            })
            .then_expect_error(LeadError::Closed(LeadStatus::Lost));
    }

    #[test]
    fn status_moves_along_the_pipeline() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::DemoScheduled,
            })
            .then_expect_events(vec![status(LeadStatus::New, LeadStatus::DemoScheduled)]);
    }

    #[test]
    fn the_same_status_again_changes_nothing() {
        Given::with(())
            .given(vec![
                created(),
                status(LeadStatus::New, LeadStatus::Contacted),
            ])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::Contacted,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn converted_is_reached_only_through_conversion() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::Converted,
            })
            .then_expect_error(LeadError::ConvertedOnlyThroughConversion);
    }

    #[test]
    fn a_worked_lead_does_not_go_back_to_new() {
        Given::with(())
            .given(vec![
                created(),
                status(LeadStatus::New, LeadStatus::Contacted),
            ])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::New,
            })
            .then_expect_error(LeadError::InvalidTransition {
                from: LeadStatus::Contacted,
                to: LeadStatus::New,
            });
    }

    #[test]
    fn a_lost_lead_can_be_reopened() {
        Given::with(())
            .given(vec![created(), status(LeadStatus::New, LeadStatus::Lost)])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::Contacted,
            })
            .then_expect_events(vec![status(LeadStatus::Lost, LeadStatus::Contacted)]);
    }

    #[test]
    fn a_converted_lead_cannot_change_status() {
        let license_id = Uuid::nil();
        Given::with(())
            .given(vec![created(), LeadEvent::LeadConverted { license_id }])
            .when(LeadCommand::ChangeStatus {
                status: LeadStatus::Lost,
            })
            .then_expect_error(LeadError::AlreadyConverted);
    }

    #[test]
    fn a_lead_converts_once() {
        let license_id = Uuid::nil();
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::MarkConverted { license_id })
            .then_expect_events(vec![LeadEvent::LeadConverted { license_id }]);
        Given::with(())
            .given(vec![created(), LeadEvent::LeadConverted { license_id }])
            .when(LeadCommand::MarkConverted { license_id })
            .then_expect_error(LeadError::AlreadyConverted);
    }

    #[test]
    fn assigning_records_the_assignee_and_repeating_it_changes_nothing() {
        let assign = |who: &str| LeadCommand::Assign {
            assignee: Some(who.into()),
        };
        Given::with(())
            .given(vec![created()])
            .when(assign("sales@domizan.com"))
            .then_expect_events(vec![LeadEvent::LeadAssigned {
                assignee: Some("sales@domizan.com".into()),
            }]);
        Given::with(())
            .given(vec![
                created(),
                LeadEvent::LeadAssigned {
                    assignee: Some("sales@domizan.com".into()),
                },
            ])
            .when(assign("sales@domizan.com"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn notes_are_set_and_cleared() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::SetNotes {
                notes: Some(sealed("n")),
            })
            .then_expect_events(vec![LeadEvent::LeadNotesSet {
                notes: Some(sealed("n")),
            }]);
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::SetNotes { notes: None })
            .then_expect_events(vec![]);
    }

    #[test]
    fn activities_are_logged_even_after_conversion() {
        let at = Utc::now();
        Given::with(())
            .given(vec![
                created(),
                LeadEvent::LeadConverted {
                    license_id: Uuid::nil(),
                },
            ])
            .when(LeadCommand::LogActivity {
                kind: ActivityKind::Call,
                note: sealed("a"),
                occurred_at: at,
            })
            .then_expect_events(vec![LeadEvent::LeadActivityLogged {
                kind: ActivityKind::Call,
                note: sealed("a"),
                occurred_at: at,
            }]);
    }

    #[test]
    fn an_update_applies_all_its_parts_or_none() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::Update {
                status: Some(LeadStatus::Contacted),
                assignee: Some(Some("sales@domizan.com".into())),
                notes: Some(Some(sealed("n"))),
            })
            .then_expect_events(vec![
                status(LeadStatus::New, LeadStatus::Contacted),
                LeadEvent::LeadAssigned {
                    assignee: Some("sales@domizan.com".into()),
                },
                LeadEvent::LeadNotesSet {
                    notes: Some(sealed("n")),
                },
            ]);
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::Update {
                status: Some(LeadStatus::Converted),
                assignee: Some(Some("sales@domizan.com".into())),
                notes: None,
            })
            .then_expect_error(LeadError::ConvertedOnlyThroughConversion);
    }

    #[test]
    fn an_erased_lead_refuses_everything_but_a_repeated_erase() {
        Given::with(())
            .given(vec![created()])
            .when(LeadCommand::Erase)
            .then_expect_events(vec![LeadEvent::LeadErased]);
        Given::with(())
            .given(vec![created(), LeadEvent::LeadErased])
            .when(LeadCommand::Erase)
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![created(), LeadEvent::LeadErased])
            .when(LeadCommand::SetNotes {
                notes: Some(sealed("n")),
            })
            .then_expect_error(LeadError::Erased);
    }
}
