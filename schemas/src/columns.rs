//! Column names of span table v1. Every other crate refers to these constants; a name exists
//! once. The column reference (types, meaning, fallbacks) is in `SCHEMA.md` and on
//! [`crate::span_table::span_schema`].

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const SERVICE_NAME: &str = "service_name";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
pub const ATTRIBUTES: &str = "attributes";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const EVENTS: &str = "events";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const LINKS: &str = "links";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai_operation_name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai_provider_name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai_request_model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai_response_model";
pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai_input_tokens";
pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai_output_tokens";
pub const SESSION_ID: &str = "session_id";
pub const USER_ID: &str = "user_id";

/// Hive partition columns: they live in the object path, not inside the Parquet files.
pub const TENANT: &str = "tenant";
pub const DATE: &str = "date";
pub const HOUR: &str = "hour";

/// Fields of the `events` list items.
pub mod event {
    pub const TIME: &str = "time";
    pub const NAME: &str = "name";
    pub const ATTRIBUTES: &str = "attributes";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
}

/// Fields of the `links` list items.
pub mod link {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const ATTRIBUTES: &str = "attributes";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    pub const FLAGS: &str = "flags";
}

/// Attribute keys read for each promoted column, in priority order: the first key present on
/// the span wins. The attribute stays in `attributes` as well.
pub mod promoted {
    pub const OPERATION_NAME: &[&str] = &["gen_ai.operation.name", "llm.request.type"];
    pub const PROVIDER_NAME: &[&str] = &[
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.provider",
        "llm.system",
    ];
    pub const REQUEST_MODEL: &[&str] = &["gen_ai.request.model", "llm.model_name"];
    pub const RESPONSE_MODEL: &[&str] = &["gen_ai.response.model", "llm.model_name"];
    pub const INPUT_TOKENS: &[&str] = &[
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ];
    pub const OUTPUT_TOKENS: &[&str] = &[
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ];
    pub const SESSION_ID: &[&str] = &["session.id", "gen_ai.conversation.id"];
    pub const USER_ID: &[&str] = &["user.id", "enduser.id"];
}

/// Resource attribute that fills `service_name`.
pub const SERVICE_NAME_ATTRIBUTE: &str = "service.name";
