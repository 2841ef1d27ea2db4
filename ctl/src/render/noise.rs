//! How a noisy value's noise is shown: mechanism, epsilon (and delta) charged, noise scale and
//! the 95% accuracy bound, so that analysts read released values as estimates. Every kind
//! that releases noisy values uses these.

use parley_proto::{DpMechanism, NoiseInfo};
use serde_json::{Value, json};

use super::table::short;

/// Lower-case name of a mechanism, as in job files.
pub fn mechanism_name(m: DpMechanism) -> &'static str {
    match m {
        DpMechanism::Laplace => "laplace",
        DpMechanism::Gaussian => "gaussian",
    }
}

/// "±12.3 at 95% (laplace, epsilon 0.5, noise scale 2, one person moves it by ≤ 1)".
pub fn noise_text(n: &NoiseInfo) -> String {
    let delta = if n.delta > 0.0 {
        format!(", delta {}", n.delta)
    } else {
        String::new()
    };
    // Results from nodes that predate the field carry no sensitivity.
    let person = if n.sensitivity > 0.0 {
        format!(", one person moves it by ≤ {}", short(n.sensitivity))
    } else {
        String::new()
    };
    format!(
        "±{} at 95% ({}, epsilon {}{delta}, noise scale {}{person})",
        short(n.accuracy95),
        mechanism_name(n.mechanism()),
        n.epsilon,
        short(n.scale)
    )
}

/// Appends the line naming the dataset a local release ran on and what it charged.
pub fn write_charged(s: &mut String, dataset: &str, epsilon: f64, delta: f64) {
    use std::fmt::Write as _;
    let delta = if delta > 0.0 {
        format!(", delta {delta}")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  dataset:              {dataset} (epsilon {epsilon} charged{delta})"
    );
}

/// JSON of a noise description.
pub fn noise_json(n: &NoiseInfo) -> Value {
    json!({
        "mechanism": mechanism_name(n.mechanism()),
        "epsilon": n.epsilon,
        "delta": n.delta,
        "scale": n.scale,
        "accuracy95": n.accuracy95,
        "sensitivity": n.sensitivity,
    })
}
