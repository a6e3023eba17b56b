//! Queries without a cache: every `ask` reads the read model, errors come
//! back as they are, and the context names the serving version.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_cqrs::{Queries, QueryContext, QueryHandler};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no account {0}")]
struct NoAccount(u32);

#[derive(Default)]
struct Lookup {
    loads: AtomicU64,
}

impl QueryHandler for Lookup {
    type Query = u32;
    type View = String;
    type Error = NoAccount;

    async fn handle(&self, id: &u32, ctx: &QueryContext) -> Result<String, NoAccount> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        match *id {
            0 => Err(NoAccount(0)),
            id => Ok(format!("{id}@{}", ctx.version().unwrap_or("-"))),
        }
    }
}

#[tokio::test]
async fn without_a_cache_every_query_reads_the_read_model() {
    let queries = Queries::builder(Lookup::default()).build().unwrap();
    assert_eq!(queries.ask(7).await.unwrap(), "7@-");
    assert_eq!(queries.ask(7).await.unwrap(), "7@-");
    assert_eq!(*queries.ask(0).await.unwrap_err(), NoAccount(0));
    assert_eq!(queries.handler().loads.load(Ordering::SeqCst), 3);

    let versioned = Queries::builder(Lookup::default())
        .version("accounts_v1")
        .build()
        .unwrap();
    assert_eq!(versioned.ask(7).await.unwrap(), "7@accounts_v1");
    versioned.switch_version("accounts_v2").await.unwrap();
    assert_eq!(versioned.ask(7).await.unwrap(), "7@accounts_v2");
    assert_eq!(versioned.version().as_deref(), Some("accounts_v2"));
}
