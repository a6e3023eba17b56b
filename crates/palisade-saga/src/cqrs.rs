//! Steps that send commands through a `palisade-cqrs` [`CommandHandler`],
//! with the step invocation's idempotency key as the command id.

use palisade_cqrs::{Aggregate, CommandContext, CommandError, CommandHandler};
use uuid::Uuid;

use crate::step::{Step, StepContext};

/// The namespace of [`StepContext::command_id`]'s UUIDv5s.
const NAMESPACE: Uuid = Uuid::from_u128(0x7061_6c69_7361_6465_2d73_6167_612d_636d);

impl StepContext {
    /// The command id of this invocation: the UUIDv5 of [`key`](Self::key),
    /// so every attempt of the step (or of its compensation), in this process
    /// or after a recovery, sends the same id, and `palisade-cqrs` appends
    /// its events once.
    pub fn command_id(&self) -> Uuid {
        Uuid::new_v5(&NAMESPACE, self.key().as_bytes())
    }

    /// The command context a step's command is sent with: the command id
    /// [`command_id`](Self::command_id), the saga id as correlation id.
    pub fn command_context(&self) -> CommandContext {
        CommandContext::new()
            .command_id(self.command_id())
            .correlation_id(self.saga_id())
    }
}

impl<S: Send + 'static> Step<S> {
    /// A compensatable step whose action sends the command `command` makes
    /// from the saga's state (the aggregate id and the command) through
    /// `handler`, with [`StepContext::command_context`]: a retried or
    /// recovered attempt resends the same command id, which appends nothing
    /// the second time ([`Committed::duplicate`](palisade_cqrs::Committed)).
    /// The state goes on unchanged; the step fails with the
    /// [`CommandError`] (a refusal, a conflict, a store error).
    ///
    /// ```
    /// # use palisade_saga::Step;
    /// # use palisade_cqrs::{Aggregate, CommandHandler, DomainEvent};
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # struct Stock(u32);
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// # enum Moved { Reserved, Released }
    /// # impl DomainEvent for Moved {
    /// #     fn event_type(&self) -> &'static str { "Moved" }
    /// # }
    /// # enum Cmd { Reserve, Release }
    /// # impl Aggregate for Stock {
    /// #     const TYPE: &'static str = "stock";
    /// #     type Command = Cmd;
    /// #     type Event = Moved;
    /// #     type Error = std::io::Error;
    /// #     type Services = ();
    /// #     async fn handle(&self, c: &Cmd, _: &()) -> Result<Vec<Moved>, std::io::Error> {
    /// #         Ok(vec![match c { Cmd::Reserve => Moved::Reserved, Cmd::Release => Moved::Released }])
    /// #     }
    /// #     fn apply(&mut self, _: Moved) {}
    /// # }
    /// # fn f(stock: CommandHandler<Stock>) {
    /// let reserve = Step::command("reserve", stock.clone(), |item: &String| (item.clone(), Cmd::Reserve))
    ///     .compensate_command(stock, |item: &String| (item.clone(), Cmd::Release));
    /// # }
    /// ```
    pub fn command<A, F>(
        name: impl Into<std::sync::Arc<str>>,
        handler: CommandHandler<A>,
        command: F,
    ) -> Self
    where
        A: Aggregate,
        A::Command: 'static,
        F: Fn(&S) -> (String, A::Command) + Send + Sync + 'static,
    {
        Self::new(name, move |state: S, ctx: StepContext| {
            let handler = handler.clone();
            let (id, command) = command(&state);
            async move {
                handler
                    .execute_with(&id, &command, &ctx.command_context())
                    .await?;
                Ok::<S, CommandError<A::Error>>(state)
            }
        })
    }

    /// The compensation that sends the compensating command `command` makes
    /// from the saga's latest state through `handler`, the same way as
    /// [`command`](Self::command): its command id is the compensation's key,
    /// so a retried or recovered compensation appends its events once.
    #[must_use]
    pub fn compensate_command<A, F>(self, handler: CommandHandler<A>, command: F) -> Self
    where
        A: Aggregate,
        A::Command: 'static,
        F: Fn(&S) -> (String, A::Command) + Send + Sync + 'static,
    {
        self.compensate(move |state: S, ctx: StepContext| {
            let handler = handler.clone();
            let (id, command) = command(&state);
            async move {
                handler
                    .execute_with(&id, &command, &ctx.command_context())
                    .await?;
                Ok::<(), CommandError<A::Error>>(())
            }
        })
    }
}
