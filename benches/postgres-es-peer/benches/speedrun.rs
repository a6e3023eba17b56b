//! A sequential benchmark shaped like the "speedrun" of Python's
//! eventsourcing library (its course-enrolment example, `agg-pg` mode, which
//! its docs report at about 3,140 operations per second): one client, one
//! database connection, each request after the last, palisade-cqrs and cqrs-es
//! on the same server in the same run.
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --manifest-path benches/postgres-es-peer/Cargo.toml --bench speedrun
//! ```
//!
//! One iteration is the speedrun's: register 10 courses and 10 students (20
//! operations, each creating an aggregate), then enrol every student on every
//! course (100 operations): 120 operations, the throughput criterion reports.
//! The speedrun's enrolment loads a student and a course and saves both in one
//! transaction. Neither palisade-cqrs nor cqrs-es writes two aggregates in one
//! transaction, so here an enrolment is two commands, one after the other: the
//! course accepts the student (refused when it is full or already has them),
//! then the student joins the course (refused past their maximum). An
//! iteration is therefore 220 commands, each a load of its aggregate's events
//! and one append, and 220 commits where the speedrun makes 120.
//!
//! - **palisade**: `CommandHandler::execute` on a `PostgresEventStore` with
//!   `pool_size(1)`, no snapshots.
//! - **cqrs-es**: `CqrsFramework::execute` over
//!   `PersistedEventStore::new_event_store(PostgresEventRepository)` on a sqlx
//!   pool with `max_connections(1)`, no snapshots, no queries.
//!
//! Schemas `palisade_bench_speedrun` and `palisade_bench_speedrun_es`, dropped
//! and recreated at the start of every run.

#[path = "common/mod.rs"]
#[allow(dead_code)] // the speedrun fills nothing and uses a pool of one
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate as EsAggregate, CqrsFramework, DomainEvent as EsDomainEvent};
use criterion::{Criterion, Throughput};
use palisade_cqrs::{
    Aggregate as PalisadeAggregate, CommandHandler, DomainEvent as PalisadeDomainEvent,
};
use palisade_event_store::{EventStore, PostgresEventStore};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

const PALISADE_SCHEMA: &str = "palisade_bench_speedrun";
const ES_SCHEMA: &str = "palisade_bench_speedrun_es";

/// Students and courses registered per iteration.
const EACH: usize = 10;

/// The speedrun's operations per iteration: registrations and enrolments.
const OPERATIONS: u64 = (2 * EACH + EACH * EACH) as u64;

// ---- the aggregates, the same on both sides ---------------------------------------

#[derive(Debug, thiserror::Error, PartialEq)]
enum EnrolmentError {
    #[error("already registered")]
    AlreadyRegistered,
    #[error("not registered")]
    NotRegistered,
    #[error("no places left")]
    Full,
    #[error("already enrolled")]
    AlreadyEnrolled,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Student {
    registered: bool,
    max_courses: usize,
    courses: Vec<String>,
}

#[derive(Debug, Clone)]
enum StudentCommand {
    Register { name: String, max_courses: usize },
    Join { course: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StudentEvent {
    Registered { name: String, max_courses: usize },
    Joined { course: String },
}

impl Student {
    fn decide(&self, command: &StudentCommand) -> Result<StudentEvent, EnrolmentError> {
        match command {
            StudentCommand::Register { .. } if self.registered => {
                Err(EnrolmentError::AlreadyRegistered)
            }
            StudentCommand::Register { name, max_courses } => Ok(StudentEvent::Registered {
                name: name.clone(),
                max_courses: *max_courses,
            }),
            StudentCommand::Join { .. } if !self.registered => Err(EnrolmentError::NotRegistered),
            StudentCommand::Join { course } if self.courses.contains(course) => {
                Err(EnrolmentError::AlreadyEnrolled)
            }
            StudentCommand::Join { .. } if self.courses.len() >= self.max_courses => {
                Err(EnrolmentError::Full)
            }
            StudentCommand::Join { course } => Ok(StudentEvent::Joined {
                course: course.clone(),
            }),
        }
    }

    fn evolve(&mut self, event: &StudentEvent) {
        match event {
            StudentEvent::Registered { max_courses, .. } => {
                self.registered = true;
                self.max_courses = *max_courses;
            }
            StudentEvent::Joined { course } => self.courses.push(course.clone()),
        }
    }
}

impl StudentEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "StudentRegistered",
            Self::Joined { .. } => "StudentJoinedCourse",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Course {
    registered: bool,
    places: usize,
    students: Vec<String>,
}

#[derive(Debug, Clone)]
enum CourseCommand {
    Register { name: String, places: usize },
    Accept { student: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CourseEvent {
    Registered { name: String, places: usize },
    Accepted { student: String },
}

impl Course {
    fn decide(&self, command: &CourseCommand) -> Result<CourseEvent, EnrolmentError> {
        match command {
            CourseCommand::Register { .. } if self.registered => {
                Err(EnrolmentError::AlreadyRegistered)
            }
            CourseCommand::Register { name, places } => Ok(CourseEvent::Registered {
                name: name.clone(),
                places: *places,
            }),
            CourseCommand::Accept { .. } if !self.registered => Err(EnrolmentError::NotRegistered),
            CourseCommand::Accept { student } if self.students.contains(student) => {
                Err(EnrolmentError::AlreadyEnrolled)
            }
            CourseCommand::Accept { .. } if self.students.len() >= self.places => {
                Err(EnrolmentError::Full)
            }
            CourseCommand::Accept { student } => Ok(CourseEvent::Accepted {
                student: student.clone(),
            }),
        }
    }

    fn evolve(&mut self, event: &CourseEvent) {
        match event {
            CourseEvent::Registered { places, .. } => {
                self.registered = true;
                self.places = *places;
            }
            CourseEvent::Accepted { student } => self.students.push(student.clone()),
        }
    }
}

impl CourseEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "CourseRegistered",
            Self::Accepted { .. } => "CourseAcceptedStudent",
        }
    }
}

/// Both frameworks' traits for an aggregate, each calling its `decide` and `evolve`.
macro_rules! both_frameworks {
    ($aggregate:ty, $type:literal, $command:ty, $event:ty) => {
        impl PalisadeDomainEvent for $event {
            fn event_type(&self) -> &'static str {
                self.name()
            }
        }

        impl EsDomainEvent for $event {
            fn event_type(&self) -> String {
                self.name().to_owned()
            }

            fn event_version(&self) -> String {
                "1".to_owned()
            }
        }

        impl PalisadeAggregate for $aggregate {
            const TYPE: &'static str = $type;
            type Command = $command;
            type Event = $event;
            type Error = EnrolmentError;
            type Services = ();

            async fn handle(
                &self,
                command: &$command,
                (): &(),
            ) -> Result<Vec<$event>, EnrolmentError> {
                self.decide(command).map(|e| vec![e])
            }

            fn apply(&mut self, event: $event) {
                self.evolve(&event);
            }
        }

        impl EsAggregate for $aggregate {
            const TYPE: &'static str = $type;
            type Command = $command;
            type Event = $event;
            type Error = EnrolmentError;
            type Services = ();

            async fn handle(
                &mut self,
                command: $command,
                (): &(),
                sink: &EventSink<Self>,
            ) -> Result<(), EnrolmentError> {
                let event = self.decide(&command)?;
                sink.write(event, self).await;
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                self.evolve(&event);
            }
        }
    };
}

both_frameworks!(Student, "student", StudentCommand, StudentEvent);
both_frameworks!(Course, "course", CourseCommand, CourseEvent);

// ---- the two sides ------------------------------------------------------------------

type Es<A> = CqrsFramework<A, PersistedEventStore<PostgresEventRepository, A>>;

enum Side {
    Palisade {
        students: CommandHandler<Student>,
        courses: CommandHandler<Course>,
    },
    /// Boxed: a `CqrsFramework` is much larger than a `CommandHandler` (an `Arc`).
    Es {
        students: Box<Es<Student>>,
        courses: Box<Es<Course>>,
    },
}

impl Side {
    async fn student(&self, id: &str, command: StudentCommand) {
        match self {
            Self::Palisade { students, .. } => {
                students
                    .execute(id, &command)
                    .await
                    .expect("palisade student command");
            }
            Self::Es { students, .. } => students
                .execute(id, command)
                .await
                .expect("cqrs-es student command"),
        }
    }

    async fn course(&self, id: &str, command: CourseCommand) {
        match self {
            Self::Palisade { courses, .. } => {
                courses
                    .execute(id, &command)
                    .await
                    .expect("palisade course command");
            }
            Self::Es { courses, .. } => courses
                .execute(id, command)
                .await
                .expect("cqrs-es course command"),
        }
    }

    /// One speedrun iteration, numbered `n` (its ids are its own).
    async fn iteration(&self, n: u64) {
        let courses: Vec<String> = (0..EACH).map(|i| format!("c{n}.{i}")).collect();
        let students: Vec<String> = (0..EACH).map(|i| format!("s{n}.{i}")).collect();
        for course in &courses {
            let name = format!("course {course}");
            self.course(course, CourseCommand::Register { name, places: EACH })
                .await;
        }
        for student in &students {
            let name = format!("student {student}");
            let command = StudentCommand::Register {
                name,
                max_courses: EACH,
            };
            self.student(student, command).await;
        }
        for student in &students {
            for course in &courses {
                let accept = CourseCommand::Accept {
                    student: student.clone(),
                };
                self.course(course, accept).await;
                let join = StudentCommand::Join {
                    course: course.clone(),
                };
                self.student(student, join).await;
            }
        }
    }
}

async fn sides(url: &str) -> (Side, Side) {
    let pool = common::pool(url, 1).await;
    common::drop_schema(&pool, PALISADE_SCHEMA).await;
    common::es_schema(&pool, ES_SCHEMA).await;
    let store = PostgresEventStore::builder(url)
        .schema(PALISADE_SCHEMA)
        .pool_size(1)
        .connect()
        .await
        .expect("connect palisade");
    let store: Arc<dyn EventStore> = Arc::new(store);
    let palisade = Side::Palisade {
        students: CommandHandler::builder(Arc::clone(&store), ())
            .build()
            .expect("a valid handler"),
        courses: CommandHandler::builder(store, ())
            .build()
            .expect("a valid handler"),
    };
    let repo = || {
        PostgresEventRepository::new(pool.clone()).with_tables(
            &format!("{ES_SCHEMA}.events"),
            &format!("{ES_SCHEMA}.snapshots"),
        )
    };
    let es = Side::Es {
        students: Box::new(CqrsFramework::new(
            PersistedEventStore::new_event_store(repo()),
            vec![],
            (),
        )),
        courses: Box::new(CqrsFramework::new(
            PersistedEventStore::new_event_store(repo()),
            vec![],
            (),
        )),
    };
    (palisade, es)
}

fn speedrun(c: &mut Criterion, rt: &Runtime, palisade: &Side, es: &Side) {
    let mut group = c.benchmark_group("speedrun/register_and_enrol");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(OPERATIONS));
    for (name, side) in [("palisade", palisade), ("cqrs_es", es)] {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        side.iteration(next).await;
                        next += 1;
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn main() {
    let Some(url) = common::url("the speedrun") else {
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (palisade, es) = rt.block_on(sides(&url));
    speedrun(&mut c, &rt, &palisade, &es);
    c.final_summary();
}
