//! Network faults inside a network namespace (placeholder: being written).
