//! Schemas of the values that travel as the text written in `runway.toml` (a route, a cron
//! expression, an expiry, an amount): serde reads and writes them as strings, so their
//! OpenAPI schemas are strings too.

use utoipa::openapi::{ObjectBuilder, RefOr, Type, schema::Schema};

macro_rules! text_schema {
    ($ty:ty, $description:literal, $example:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($description))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

text_schema!(
    crate::Route,
    "An exact path (`/hello`) or a prefix and everything below it (`/orders/...`).",
    "/hello"
);
text_schema!(
    crate::CronExpr,
    "A cron expression: five fields (minute first), or six with seconds first.",
    "0 3 * * *"
);
text_schema!(
    crate::Expiry,
    "A date (through its end, UTC) or an RFC 3339 instant.",
    "2027-06-30"
);
text_schema!(
    crate::Usd,
    "An amount of US dollars: `20 USD`, `$20` or `0.50`.",
    "20 USD"
);
