//! A bank account: the aggregate the tests share.
#![allow(dead_code, unreachable_pub)]

use palisade_cqrs::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub opened: bool,
    pub balance: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Open,
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is not open")]
    NotOpen,
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: u64, asked: u64 },
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(&self, command: &Command, (): &()) -> Result<Vec<AccountEvent>, AccountError> {
        match *command {
            Command::Open if self.opened => Err(AccountError::AlreadyOpen),
            Command::Open => Ok(vec![AccountEvent::Opened]),
            _ if !self.opened => Err(AccountError::NotOpen),
            Command::Deposit(n) => Ok(vec![AccountEvent::Deposited(n)]),
            Command::Withdraw(n) if n > self.balance => Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked: n,
            }),
            Command::Withdraw(n) => Ok(vec![AccountEvent::Withdrawn(n)]),
        }
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened => self.opened = true,
            AccountEvent::Deposited(n) => self.balance += n,
            AccountEvent::Withdrawn(n) => self.balance -= n,
        }
    }
}
