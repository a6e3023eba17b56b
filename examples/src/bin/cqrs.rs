//! A bank account on SQLite: commands from sixteen tellers at once on one
//! account (conflicts retried, the no-overdraft rule kept), a client's retry
//! of a timed-out command (appended once), and a balance read model kept
//! exactly once by a projection that is stopped and restarted halfway.
//!
//! Run with `cargo run -p palisade-examples --bin cqrs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::cqrs::rusqlite::{self, Transaction};
use palisade::cqrs::{
    Aggregate, BoxError, CommandContext, CommandError, CommandHandler, DomainEvent, Event,
    ProjectionContext, ProjectionRunner, RecordedEvent, SqliteProjection, SqliteReadModel, Uuid,
};
use palisade::event_store::{EventStore, SqliteEventStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    open: bool,
    balance: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Opened,
    Deposited(u64),
    Withdrawn(u64),
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Deposited(_) => "Deposited",
            Self::Withdrawn(_) => "Withdrawn",
        }
    }
}

enum Command {
    Open,
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug)]
enum AccountError {
    NotOpen,
    Insufficient { balance: u64, asked: u64 },
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOpen => f.write_str("the account is not open"),
            Self::Insufficient { balance, asked } => {
                write!(f, "insufficient funds: balance {balance}, asked {asked}")
            }
        }
    }
}

impl std::error::Error for AccountError {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(&self, command: &Command, (): &()) -> Result<Vec<AccountEvent>, AccountError> {
        match *command {
            Command::Open => Ok(vec![AccountEvent::Opened]),
            _ if !self.open => Err(AccountError::NotOpen),
            Command::Deposit(n) => Ok(vec![AccountEvent::Deposited(n)]),
            Command::Withdraw(n) if n > self.balance => Err(AccountError::Insufficient {
                balance: self.balance,
                asked: n,
            }),
            Command::Withdraw(n) => Ok(vec![AccountEvent::Withdrawn(n)]),
        }
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened => self.open = true,
            AccountEvent::Deposited(n) => self.balance += n,
            AccountEvent::Withdrawn(n) => self.balance -= n,
        }
    }
}

/// The read model: one row per account, and how many events it has taken in.
struct Balances;

impl SqliteProjection for Balances {
    fn setup(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL, events INTEGER NOT NULL)",
        )
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        let delta: i64 = match event.decode::<AccountEvent>()? {
            AccountEvent::Opened => 0,
            AccountEvent::Deposited(n) => i64::try_from(n)?,
            AccountEvent::Withdrawn(n) => -i64::try_from(n)?,
        };
        tx.execute(
            "INSERT INTO balances VALUES (?1, ?2, 1)
             ON CONFLICT (account) DO UPDATE SET balance = balance + ?2, events = events + 1",
            rusqlite::params![event.stream.as_str(), delta],
        )?;
        Ok(())
    }
}

async fn read_balances(model: &SqliteReadModel) -> Result<Vec<(String, i64, i64)>, BoxError> {
    Ok(model
        .read(|c| {
            let mut q =
                c.prepare("SELECT account, balance, events FROM balances ORDER BY account")?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let dir = std::env::temp_dir();
    let id = std::process::id();
    let (events_path, read_path) = (
        dir.join(format!("palisade-cqrs-example-{id}-events.db")),
        dir.join(format!("palisade-cqrs-example-{id}-read.db")),
    );
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(&events_path).await?);
    println!(
        "events in {}, read model in {}",
        events_path.display(),
        read_path.display()
    );

    let conflicts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&conflicts);
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .name("bank")
        .max_attempts(50)
        .listener(move |e: &Event| {
            if let Event::CommandExecuted { conflicts, .. } = e {
                seen.fetch_add(*conflicts, Ordering::Relaxed);
            }
        })
        .build()?;

    accounts.execute("alice", &Command::Open).await?;
    accounts.execute("alice", &Command::Deposit(500)).await?;
    accounts.execute("bob", &Command::Open).await?;
    println!("alice opens with 500; bob opens with nothing");

    // Sixteen tellers, twenty withdrawals of 2 each, all on alice's account at once:
    // 640 asked, 500 there.
    let tellers: Vec<_> = (0..16)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let (mut paid, mut refused) = (0u32, 0u32);
                for _ in 0..20 {
                    match accounts.execute("alice", &Command::Withdraw(2)).await {
                        Ok(_) => paid += 1,
                        Err(CommandError::Refused(AccountError::Insufficient { .. })) => {
                            refused += 1;
                        }
                        Err(other) => return Err(other.to_string()),
                    }
                }
                Ok((paid, refused))
            })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for teller in tellers {
        let (p, r) = teller.await??;
        paid += p;
        refused += r;
    }
    let alice = accounts.load("alice").await?;
    println!(
        "16 tellers × 20 withdrawals of 2: {paid} paid, {refused} refused for insufficient funds, \
         {} version conflicts retried by the handler, none returned; alice has {} at version {}",
        conflicts.load(Ordering::Relaxed),
        alice.state.balance,
        alice.version
    );
    assert_eq!(paid, 250);
    assert_eq!(alice.state.balance, 0);

    // A client sends a deposit, times out, and sends it again with the same command id.
    let ctx = CommandContext::new()
        .command_id(Uuid::new_v4())
        .field("client", "mobile");
    let first = accounts
        .execute_with("bob", &Command::Deposit(70), &ctx)
        .await?;
    let retry = accounts
        .execute_with("bob", &Command::Deposit(70), &ctx)
        .await?;
    println!(
        "bob's deposit of 70 sent twice with one command id: first appended {} event (version {}), \
         the retry {} (duplicate: {}); bob has {}",
        first.events,
        first.version,
        retry.events,
        retry.duplicate,
        accounts.load("bob").await?.state.balance
    );
    match accounts.execute("bob", &Command::Withdraw(100)).await {
        Err(e) => println!("bob withdraws 100: {e}"),
        Ok(_) => return Err("bob's overdraft was accepted".into()),
    }
    match accounts.execute("carol", &Command::Deposit(1)).await {
        Err(e) => println!("carol deposits 1: {e}"),
        Ok(_) => return Err("carol's account was never opened".into()),
    }

    // The read model: a runner stopped early, then restarted; each event counts once.
    let model = SqliteReadModel::open(&read_path).await?;
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .page_size(16)
        .projection(model.projector("balances", Balances))
        .start()
        .await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let halfway = runner.status("balances")?.handled;
    drop(runner);
    println!("the projection ran for 5 ms and was stopped after {halfway} events");
    let model = SqliteReadModel::open(&read_path).await?;
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(model.projector("balances", Balances))
        .start()
        .await?;
    runner.wait_caught_up(Duration::from_millis(5)).await?;
    println!(
        "restarted from its checkpoint, it applied {} more; lag {}",
        runner.status("balances")?.handled,
        runner.lag("balances").await?
    );
    for (account, balance, events) in read_balances(&model).await? {
        println!("  {account}: balance {balance} from {events} events");
    }
    let head = store.head().await?;
    let rows = read_balances(&model).await?;
    let counted: i64 = rows.iter().map(|r| r.2).sum();
    assert_eq!(
        counted,
        i64::try_from(head.sequence)?,
        "each event counted once"
    );
    println!("{counted} events in the log, {counted} counted in the read model");

    drop(runner);
    for path in [&events_path, &read_path] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(())
}
