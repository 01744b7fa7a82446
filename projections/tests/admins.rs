//! The `admin_users` read model against a real Postgres: every admin event lands in its
//! row, the queries answer from it, and a rebuild from the log gives the same rows.

use std::sync::Arc;
use std::time::Duration;

use aggregates::admin::{AdminCommand, AdminUpdate, AdminUser, Permission, Role};
use chrono::{TimeZone, Utc};
use eventstore::{CommandHandler, Cursor, EventStore, Metadata};
use projections::admins::{self, AdminSort, AdminsProjection};
use projections::{ProjectionHandle, RunnerConfig};
use sqlx::PgPool;
use uuid::Uuid;

fn start(pool: &PgPool, store: &EventStore) -> ProjectionHandle {
    let config = RunnerConfig {
        takeover_interval: Duration::from_millis(50),
        reconnect_delay: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    projections::spawn(
        Arc::new(projections::Adapter(AdminsProjection)),
        store.clone(),
        (*pool.connect_options()).clone(),
        config,
    )
}

async fn run(store: &EventStore, id: Uuid, command: AdminCommand) -> Cursor {
    CommandHandler::<AdminUser>::new(store.clone(), ())
        .execute(&id.to_string(), command, &Metadata::actor("test"))
        .await
        .unwrap()
        .cursor()
        .unwrap()
}

fn create(id: Uuid, email: &str, role: Role, minute: u32) -> AdminCommand {
    AdminCommand::Create {
        id,
        email: email.into(),
        name: format!("Admin {minute}"),
        role,
        permissions: vec![Permission::Leads],
        password_hash: "$2b$12$first".into(),
        at: Utc.with_ymd_and_hms(2026, 2, 5, 16, minute, 0).unwrap(),
    }
}

async fn rows(pool: &PgPool) -> Vec<(Uuid, String, String, Vec<String>, bool, String)> {
    sqlx::query_as(
        "SELECT id, email, role, permissions, active, password_hash FROM admin_users ORDER BY email",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[testkit::test(migrations = "../migrations")]
async fn admin_events_build_rows_that_the_queries_read_and_a_rebuild_repeats(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let (root, viewer) = (Uuid::from_u128(1), Uuid::from_u128(2));
    run(
        &store,
        root,
        create(root, "Root@Example.com", Role::SuperAdmin, 0),
    )
    .await;
    run(
        &store,
        viewer,
        create(viewer, "viewer@example.com", Role::Viewer, 1),
    )
    .await;
    let at = Utc.with_ymd_and_hms(2026, 2, 5, 17, 0, 0).unwrap();
    run(
        &store,
        viewer,
        AdminCommand::Update(AdminUpdate {
            role: Some(Role::Admin),
            permissions: Some(vec![Permission::Users]),
            password_hash: Some("$2b$12$second".into()),
            active: Some(false),
            active_super_admins: 1,
            at,
            ..AdminUpdate::default()
        }),
    )
    .await;
    let last = run(
        &store,
        root,
        AdminCommand::RecordLogin {
            ip: Some("203.0.113.7".into()),
            user_agent: None,
            at,
        },
    )
    .await;

    let projection = start(&pool, &store);
    projection
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();

    let root_row = admins::find_by_email(&pool, "root@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(root_row.id, root);
    assert_eq!(root_row.role, Role::SuperAdmin);
    assert_eq!(root_row.permissions, Permission::ALL.to_vec());
    assert_eq!(root_row.last_login_at, Some(at));
    // A login is not an edit.
    assert_eq!(root_row.updated_at, root_row.created_at);
    assert!(!format!("{root_row:?}").contains("$2b$"));

    let viewer_row = admins::find_by_id(&pool, viewer).await.unwrap().unwrap();
    assert_eq!(viewer_row.role, Role::Admin);
    assert_eq!(viewer_row.permissions, vec![Permission::Users]);
    assert!(!viewer_row.active);
    assert_eq!(viewer_row.password_hash, "$2b$12$second");
    assert_eq!(viewer_row.updated_at, at);

    assert_eq!(admins::count_active_super_admins(&pool).await.unwrap(), 1);
    let (page, total) = admins::list(&pool, 0, 1, AdminSort::Email, true)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(page[0].email, "viewer@example.com");

    // Rebuild: empty the table, rewind the checkpoint, project again.
    projection.stop().await;
    let before = rows(&pool).await;
    sqlx::query("DELETE FROM admin_users")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE projection_checkpoints SET transaction_id = 0, global_position = 0 WHERE name = $1",
    )
    .bind(admins::NAME)
    .execute(&pool)
    .await
    .unwrap();
    let again = start(&pool, &store);
    again.wait_for(last, Duration::from_secs(10)).await.unwrap();
    assert_eq!(rows(&pool).await, before);
    again.stop().await;
}
