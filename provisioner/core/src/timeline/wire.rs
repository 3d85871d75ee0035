//! The wire form of a timeline entry (store rows, exports, the API):
//! `{"at", "kind", "detail", "event"}`, and reading entries of schema version 1.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DhcpMessage, Event, EventKind, TimelineEvent, legacy, text};

/// A timeline entry as written to the store, exports and the API: `kind` and
/// `detail` for every reader, `event` with the typed fields (absent in entries of
/// schema version 1 and in [`Event::Legacy`] ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Wire {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
    /// Human-readable detail; never secret material.
    #[serde(default)]
    pub detail: String,
    /// The typed event: `type` names the variant, the other fields its facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub event: Option<Event>,
}

impl Serialize for TimelineEvent {
    /// As [`Wire`], without copying the event.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let typed = !matches!(self.event, Event::Legacy { .. });
        let mut st = s.serialize_struct("TimelineEvent", 3 + usize::from(typed))?;
        let at = self
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        st.serialize_field("at", &at)?;
        st.serialize_field("kind", &self.kind())?;
        st.serialize_field("detail", &self.detail())?;
        if typed {
            st.serialize_field("event", &self.event)?;
        }
        st.end()
    }
}

impl From<Wire> for TimelineEvent {
    fn from(w: Wire) -> Self {
        let event = match w.event {
            Some(ev) => ev,
            None => legacy::parse(w.kind, &w.detail),
        };
        Self { at: w.at, event }
    }
}

impl Serialize for DhcpMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DhcpMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        text::parse_dhcp_message(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a DHCP message type")))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TimelineEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Wire as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TimelineEvent {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("TimelineEvent")
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <Wire as utoipa::ToSchema>::schemas(schemas);
    }
}
