//! Kafka-aware fault targets (placeholder: being written).
