//! Workflows: jobs made of checkpointed steps.
//!
//! `model` is the graph as loaded and as pinned with each run; `template` renders `{{ … }}` and
//! evaluates `if:`; the step state machine (which steps are ready, what a step's end means for
//! the run) lives here, as pure logic over the store's transaction, like `queue`.

pub mod launch;
pub mod model;
pub mod run;
pub mod steps;
pub mod template;
