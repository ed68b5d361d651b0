//! [`OrderedValue`]: a [`Value`] that keeps the order of its objects' keys as read.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A [`Value`] that keeps the order of its objects' keys as read, as Python's dict
/// does: what [`unpack`] reads an envelope's item into. A [`Value`]'s objects hold their
/// keys sorted (Paperboy does not turn on serde_json's `preserve_order`, see
/// [the module](super#key-order)); this one serializes them in the order they were read
/// (a repeated key at its first position, with its last value), so [`pack`] writes it
/// as Python's `json.dumps` writes what `json.loads` read.
///
/// It derefs to the [`Value`] (read-only: the order is kept with it), compares equal to
/// a [`Value`] holding the same JSON whatever the order, and
/// [`into_value`](Self::into_value) gives the [`Value`]. Its `Display` writes compact
/// JSON in its order (`{:#}`: pretty).
///
/// ```
/// use paperboy::envelope::unpack;
/// use serde_json::json;
///
/// let read = unpack(br#"{"item": {"b": [1, {"y": 2, "x": 3}], "a": true}}"#).unwrap().unwrap();
/// assert_eq!(read.item.to_string(), r#"{"b":[1,{"y":2,"x":3}],"a":true}"#);
/// assert_eq!(read.item["b"][1]["x"], 3); // as a Value
/// assert_eq!(read.item, json!({"a": true, "b": [1, {"x": 3, "y": 2}]}));
/// let value: serde_json::Value = read.item.into_value(); // keys sorted
/// assert_eq!(value.to_string(), r#"{"a":true,"b":[1,{"x":3,"y":2}]}"#);
/// ```
///
/// [`unpack`]: super::unpack
/// [`pack`]: super::pack
#[derive(Clone)]
pub struct OrderedValue {
    pub(super) value: Value,
    pub(super) order: Order,
}

/// Where an [`OrderedValue`]'s order differs from its [`Value`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    /// As the value's maps iterate (scalars, and containers already in that order).
    Map,
    /// An array's elements' orders.
    Array(Vec<Order>),
    /// An object's keys in order, with their values' orders.
    Object(Vec<(String, Order)>),
}

impl OrderedValue {
    /// The [`Value`] (its objects' keys in its map's order: sorted, unless serde_json's
    /// `preserve_order` is on in the program).
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The [`Value`], as [`Deref`](std::ops::Deref) gives it.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// A [`Value`] in its map's order.
impl From<Value> for OrderedValue {
    fn from(value: Value) -> Self {
        OrderedValue {
            value,
            order: Order::Map,
        }
    }
}

impl From<OrderedValue> for Value {
    fn from(v: OrderedValue) -> Value {
        v.value
    }
}

impl std::ops::Deref for OrderedValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Equal when they hold the same JSON in the same order.
impl PartialEq for OrderedValue {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && InOrder::from(self) == InOrder::from(other)
    }
}

/// Equal when it holds the same JSON, whatever the order of its keys.
impl PartialEq<Value> for OrderedValue {
    fn eq(&self, other: &Value) -> bool {
        self.value == *other
    }
}

/// Equal when it holds the same JSON, whatever the order of its keys.
impl PartialEq<OrderedValue> for Value {
    fn eq(&self, other: &OrderedValue) -> bool {
        *self == other.value
    }
}

impl std::fmt::Display for OrderedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if f.alternate() {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        };
        f.write_str(&text.map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for OrderedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrderedValue({self})")
    }
}

impl Serialize for OrderedValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        InOrder::from(self).serialize(s)
    }
}

/// A value with its order, serialized in that order.
#[derive(Clone, Copy)]
struct InOrder<'a>(&'a Value, &'a Order);

impl<'a> From<&'a OrderedValue> for InOrder<'a> {
    fn from(v: &'a OrderedValue) -> Self {
        InOrder(&v.value, &v.order)
    }
}

/// Equal when the keys come in the same order at every level (the values being equal).
impl PartialEq for InOrder<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.0, other.0) {
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len()
                    && (0..a.len()).all(|i| {
                        InOrder(&a[i], self.element(i)) == InOrder(&b[i], other.element(i))
                    })
            }
            (Value::Object(_), Value::Object(_)) => {
                let (a, b) = (self.members(), other.members());
                a.len() == b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
            }
            _ => true,
        }
    }
}

impl<'a> InOrder<'a> {
    /// The order of an array's element `i`.
    fn element(&self, i: usize) -> &'a Order {
        match self.1 {
            Order::Array(orders) => orders.get(i).unwrap_or(&Order::Map),
            _ => &Order::Map,
        }
    }

    /// An object's members in order.
    fn members(&self) -> Vec<(&'a str, InOrder<'a>)> {
        let Value::Object(map) = self.0 else {
            return Vec::new();
        };
        match self.1 {
            Order::Object(keys) if keys.len() == map.len() => keys
                .iter()
                .filter_map(|(k, o)| map.get(k).map(|v| (k.as_str(), InOrder(v, o))))
                .collect(),
            _ => map
                .iter()
                .map(|(k, v)| (k.as_str(), InOrder(v, &Order::Map)))
                .collect(),
        }
    }
}

impl Serialize for InOrder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (_, Order::Map) => self.0.serialize(s),
            (Value::Array(items), _) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for (i, v) in items.iter().enumerate() {
                    seq.serialize_element(&InOrder(v, self.element(i)))?;
                }
                seq.end()
            }
            (Value::Object(map), _) => {
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, v) in self.members() {
                    out.serialize_entry(k, &v)?;
                }
                out.end()
            }
            (v, _) => v.serialize(s),
        }
    }
}
