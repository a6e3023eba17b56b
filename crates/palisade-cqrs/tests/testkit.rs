//! The test kit's own tests: it passes what holds and fails what does not.

mod common;

use std::sync::Mutex;

use common::{Account, AccountError, AccountEvent, Command};
use palisade_cqrs::testkit::{ProjectionTest, Recorder, given};
use palisade_cqrs::{BoxError, Projection, ProjectionContext, RecordedEvent};

#[test]
fn given_when_then_events() {
    given::<Account>([])
        .when(Command::Open)
        .then_events([AccountEvent::Opened]);
    given::<Account>([AccountEvent::Opened, AccountEvent::Deposited(10)])
        .when(Command::Withdraw(4))
        .then_events([AccountEvent::Withdrawn(4)]);
}

#[test]
fn given_when_then_error() {
    given::<Account>([AccountEvent::Opened, AccountEvent::Deposited(3)])
        .when(Command::Withdraw(4))
        .then_error(&AccountError::InsufficientFunds {
            balance: 3,
            asked: 4,
        });
    given::<Account>([])
        .when(Command::Deposit(1))
        .then_error_matches(|e| *e == AccountError::NotOpen);
}

#[test]
fn given_when_then_state_and_result() {
    given::<Account>([AccountEvent::Opened])
        .when(Command::Deposit(9))
        .then_state(|a| assert_eq!(a.balance, 9));
    let r = given::<Account>([AccountEvent::Opened])
        .when(Command::Open)
        .result();
    assert_eq!(r, Err(AccountError::AlreadyOpen));
}

#[test]
#[should_panic(expected = "the command caused other events")]
fn other_events_fail_the_test() {
    given::<Account>([AccountEvent::Opened])
        .when(Command::Deposit(2))
        .then_events([AccountEvent::Deposited(3)]);
}

#[test]
#[should_panic(expected = "but the command was refused: NotOpen")]
fn a_refusal_fails_an_events_expectation() {
    given::<Account>([])
        .when(Command::Deposit(2))
        .then_events([AccountEvent::Deposited(2)]);
}

#[test]
#[should_panic(expected = "but the command caused [Opened]")]
fn an_acceptance_fails_an_error_expectation() {
    given::<Account>([])
        .when(Command::Open)
        .then_error(&AccountError::NotOpen);
}

#[test]
#[should_panic(expected = "the command was refused otherwise")]
fn another_error_fails_the_test() {
    given::<Account>([])
        .when(Command::Withdraw(1))
        .then_error(&AccountError::AlreadyOpen);
}

/// Balances per stream, with the versions seen.
#[derive(Default)]
struct Balances(Mutex<Vec<(String, u64, u64)>>);

#[async_trait::async_trait]
impl Projection for Balances {
    async fn handle(&self, e: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        let amount = match e.decode::<AccountEvent>()? {
            AccountEvent::Deposited(n) => n,
            AccountEvent::Withdrawn(n) if n > 100 => return Err("too large".into()),
            _ => 0,
        };
        self.0
            .lock()
            .unwrap()
            .push((e.stream.to_string(), e.version, amount));
        Ok(())
    }
}

#[test]
fn given_events_then_view() {
    ProjectionTest::new(Balances::default())
        .given(
            "account-1",
            [AccountEvent::Opened, AccountEvent::Deposited(5)],
        )
        .given("account-2", [AccountEvent::Opened])
        .given("account-1", [AccountEvent::Deposited(2)])
        .then_view(|b| {
            assert_eq!(
                *b.0.lock().unwrap(),
                [
                    ("account-1".to_owned(), 1, 0),
                    ("account-1".to_owned(), 2, 5),
                    ("account-2".to_owned(), 1, 0),
                    ("account-1".to_owned(), 3, 2),
                ]
            );
        });
}

#[test]
fn a_failing_projection_is_reported() {
    let err = ProjectionTest::new(Balances::default())
        .try_given("account-1", [AccountEvent::Withdrawn(500)])
        .expect_err("the projection fails");
    assert_eq!(err.to_string(), "too large");
}

#[test]
fn the_recorder_numbers_like_a_store() {
    let mut r = Recorder::new();
    let a = r.record("account-1", &AccountEvent::Opened);
    let b = r.record("account-2", &AccountEvent::Opened);
    let c = r.record("account-1", &AccountEvent::Deposited(1));
    assert_eq!((a.version, b.version, c.version), (1, 1, 2));
    assert!(a.position < b.position && b.position < c.position);
    assert_eq!(c.event_type, "Deposited");
}
