//! The plan's decisions.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use super::{PlanCommand, PlanError, PlanEvent, is_valid_slug};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    created: bool,
    deleted: bool,
}

impl Plan {
    pub fn exists(&self) -> bool {
        self.created && !self.deleted
    }

    fn decide(&self, command: PlanCommand) -> Result<Vec<PlanEvent>, PlanError> {
        match command {
            PlanCommand::Create { slug, spec } => {
                // A deleted plan's slug is not reused: its id (and history) is the slug's.
                if self.created {
                    return Err(PlanError::AlreadyExists);
                }
                if !is_valid_slug(&slug) {
                    return Err(PlanError::Invalid("slug"));
                }
                spec.check()?;
                Ok(vec![PlanEvent::PlanCreated { slug, spec }])
            }
            PlanCommand::Update { spec } => {
                if !self.exists() {
                    return Err(PlanError::NotFound);
                }
                spec.check()?;
                Ok(vec![PlanEvent::PlanUpdated { spec }])
            }
            PlanCommand::Delete { licenses_using } => {
                if !self.exists() {
                    return Err(PlanError::NotFound);
                }
                if licenses_using > 0 {
                    return Err(PlanError::InUse(licenses_using));
                }
                Ok(vec![PlanEvent::PlanDeleted])
            }
        }
    }
}

impl Aggregate for Plan {
    const TYPE: &'static str = super::AGGREGATE_TYPE;
    type Command = PlanCommand;
    type Event = PlanEvent;
    type Error = PlanError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PlanCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PlanError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PlanEvent) {
        match event {
            PlanEvent::PlanCreated { .. } => self.created = true,
            PlanEvent::PlanUpdated { .. } => {}
            PlanEvent::PlanDeleted => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::plan::default_plans;

    type Given = TestFramework<Plan>;

    fn pro() -> (String, crate::plan::PlanSpec) {
        default_plans().remove(1)
    }

    #[test]
    fn a_plan_is_created_once_per_slug() {
        let (slug, spec) = pro();
        Given::with(())
            .given(vec![PlanEvent::PlanCreated {
                slug: slug.clone(),
                spec: spec.clone(),
            }])
            .when(PlanCommand::Create { slug, spec })
            .then_expect_error(PlanError::AlreadyExists);
    }

    #[test]
    fn a_plan_in_use_is_not_deleted() {
        let (slug, spec) = pro();
        Given::with(())
            .given(vec![PlanEvent::PlanCreated { slug, spec }])
            .when(PlanCommand::Delete { licenses_using: 2 })
            .then_expect_error(PlanError::InUse(2));
    }

    #[test]
    fn an_unused_plan_is_deleted_and_then_gone() {
        let (slug, spec) = pro();
        Given::with(())
            .given(vec![
                PlanEvent::PlanCreated {
                    slug,
                    spec: spec.clone(),
                },
                PlanEvent::PlanDeleted,
            ])
            .when(PlanCommand::Update { spec })
            .then_expect_error(PlanError::NotFound);
    }

    #[test]
    fn bad_specs_name_their_field() {
        let (slug, mut spec) = pro();
        spec.price_monthly = -1;
        Given::with(())
            .given_no_previous_events()
            .when(PlanCommand::Create {
                slug: slug.clone(),
                spec: spec.clone(),
            })
            .then_expect_error(PlanError::Invalid("priceMonthly"));
        let (_, mut spec) = pro();
        spec.features.push("teleport".into());
        Given::with(())
            .given_no_previous_events()
            .when(PlanCommand::Create {
                slug: "Bad Slug".into(),
                spec: spec.clone(),
            })
            .then_expect_error(PlanError::Invalid("slug"));
        Given::with(())
            .given_no_previous_events()
            .when(PlanCommand::Create { slug, spec })
            .then_expect_error(PlanError::Invalid("features"));
    }
}
