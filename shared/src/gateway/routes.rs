//! The HTTP routes of the served RPCs: each RPC's Connect path
//! (`POST /<package>.<Service>/<Method>`) and the REST bindings its
//! `google.api.http` option declares (AIP-127), with their path templates.
//!
//! Template syntax (google/api/http.proto):
//! `Template = "/" Segments [ ":" Verb ]`, `Segment = "*" | "**" | LITERAL |
//! Variable`, `Variable = "{" FieldPath [ "=" Segments ] "}"`; a variable
//! without segments is `{x=*}`. A variable binds the path segments it
//! matches, joined by `/` (so `{name=products/*}` binds `products/MUG`).

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// The variables a path bound: (field path, value).
pub type Bound = Vec<(String, String)>;

/// Where a REST route's request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRule {
    /// No body (GET, DELETE): everything comes from the path and query.
    None,
    /// The body is the whole request message (`body: "*"`).
    Whole,
    /// The body is this field (its proto name) of the request.
    Field(String),
}

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest of the path (at least one segment).
    Rest,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// Variables as (field path, first part, end part) over `parts`.
    variables: Vec<(String, usize, usize)>,
    verb: Option<String>,
    /// The template as written (for the OpenAPI document and errors).
    pub text: String,
}

impl Template {
    /// Parses `text`; `Err` names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} does not start with /"))?;
        // The verb follows the last ':' outside braces.
        let mut depth = 0;
        let mut verb_at = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(i),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(i) => (&rest[..i], Some(rest[i + 1..].to_owned())),
            None => (rest, None),
        };
        let mut template = Self {
            parts: Vec::new(),
            variables: Vec::new(),
            verb,
            text: text.to_owned(),
        };
        let mut chars = path;
        while !chars.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: unclosed variable"))?;
                let (field, segments) = match inner[..end].split_once('=') {
                    Some((field, segments)) => (field, segments),
                    None => (&inner[..end], "*"),
                };
                let start = template.parts.len();
                for segment in segments.split('/') {
                    template.parts.push(Self::part(segment, text)?);
                }
                template
                    .variables
                    .push((field.to_owned(), start, template.parts.len()));
                chars = &inner[end + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let segment = &chars[..end];
                if segment.contains('{') {
                    return Err(format!("{text:?}: a variable must be a whole segment"));
                }
                template.parts.push(Self::part(segment, text)?);
                chars = &chars[end..];
            }
            if let Some(next) = chars.strip_prefix('/') {
                chars = next;
                if chars.is_empty() {
                    return Err(format!("{text:?}: trailing /"));
                }
            } else if !chars.is_empty() {
                return Err(format!("{text:?}: expected / after a variable"));
            }
        }
        if template
            .parts
            .iter()
            .take(template.parts.len().saturating_sub(1))
            .any(|p| *p == Part::Rest)
        {
            return Err(format!("{text:?}: ** must be last"));
        }
        Ok(template)
    }

    fn part(segment: &str, text: &str) -> Result<Part, String> {
        match segment {
            "" => Err(format!("{text:?}: empty segment")),
            "*" => Ok(Part::One),
            "**" => Ok(Part::Rest),
            literal => Ok(Part::Literal(literal.to_owned())),
        }
    }

    /// The field paths the template binds.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|(field, _, _)| field.as_str())
    }

    /// Matches a request path (still percent-encoded); the bound variables
    /// (percent-decoded) when it matches.
    pub fn matches(&self, path: &str) -> Option<Bound> {
        let path = path.strip_prefix('/')?;
        let (path, verb) = match &self.verb {
            Some(verb) => (
                path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
                Some(verb),
            ),
            None => (path, None),
        };
        // Without a verb, a path ending in ":x" is some other route's.
        if verb.is_none()
            && path
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
        {
            return None;
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        // Where each part starts in `segments`.
        let mut starts = Vec::with_capacity(self.parts.len() + 1);
        let mut at = 0;
        for part in &self.parts {
            starts.push(at);
            match part {
                Part::Literal(literal) => {
                    if segments.get(at).map(|s| decode(s)) != Some(literal.clone()) {
                        return None;
                    }
                    at += 1;
                }
                Part::One => {
                    segments.get(at)?;
                    at += 1;
                }
                Part::Rest => {
                    if at >= segments.len() {
                        return None;
                    }
                    at = segments.len();
                }
            }
        }
        starts.push(at);
        if at != segments.len() {
            return None;
        }
        Some(
            self.variables
                .iter()
                .map(|(field, first, end)| {
                    let value = segments[starts[*first]..starts[*end]]
                        .iter()
                        .map(|s| decode(s))
                        .collect::<Vec<_>>()
                        .join("/");
                    (field.clone(), value)
                })
                .collect(),
        )
    }

    /// How specific the template is: literal segments count most, so
    /// `/v1/accounts/me` wins over `/v1/{name=accounts/*}`.
    fn specificity(&self) -> (usize, usize, bool) {
        let literals = self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Literal(_)))
            .count();
        (literals, self.parts.len(), self.verb.is_some())
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// One REST binding of an RPC.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub verb: http::Method,
    pub template: Template,
    pub body: BodyRule,
    /// The response field returned instead of the whole response (its
    /// proto name), when set.
    pub response_body: Option<String>,
    pub method: MethodDescriptor,
}

/// Every route of the RPCs one server serves.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Connect paths: `/<service>/<method>` → the method.
    pub connect: HashMap<String, MethodDescriptor>,
    /// REST routes, most specific first.
    pub http: Vec<HttpRoute>,
}

/// The full name of the `google.api.http` extension.
const HTTP_EXTENSION: &str = "google.api.http";

impl RouteTable {
    /// The routes of `services` (full names) in `pool`. A service the pool
    /// does not know is skipped; a malformed annotation is an error.
    pub fn new(pool: &DescriptorPool, services: &[&str]) -> Result<Self, String> {
        let mut table = Self::default();
        let extension = pool.get_extension_by_name(HTTP_EXTENSION);
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            for method in service.methods() {
                table.connect.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    method.clone(),
                );
                let Some(extension) = &extension else {
                    continue;
                };
                let options = method.options();
                if !options.has_extension(extension) {
                    continue;
                }
                if let Value::Message(rule) = options.get_extension(extension).as_ref() {
                    table.add_rule(&method, rule, true)?;
                }
            }
        }
        table
            .http
            .sort_by_key(|route| std::cmp::Reverse(route.template.specificity()));
        Ok(table)
    }

    fn add_rule(
        &mut self,
        method: &MethodDescriptor,
        rule: &DynamicMessage,
        top: bool,
    ) -> Result<(), String> {
        let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let pattern = [
            ("get", http::Method::GET),
            ("put", http::Method::PUT),
            ("post", http::Method::POST),
            ("delete", http::Method::DELETE),
            ("patch", http::Method::PATCH),
        ]
        .into_iter()
        .find_map(|(name, verb)| text(name).map(|path| (verb, path)))
        .or_else(|| match rule.get_field_by_name("custom").as_deref() {
            Some(Value::Message(custom)) => {
                let field = |name: &str| match custom.get_field_by_name(name).as_deref() {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                };
                http::Method::from_bytes(field("kind").as_bytes())
                    .ok()
                    .map(|verb| (verb, field("path")))
            }
            _ => None,
        });
        let Some((verb, path)) = pattern else {
            return Err(format!(
                "{}: a google.api.http rule without a pattern",
                method.full_name()
            ));
        };
        let template =
            Template::parse(&path).map_err(|err| format!("{}: {err}", method.full_name()))?;
        let input = method.input();
        for variable in template.variables() {
            field_path(&input, variable).ok_or_else(|| {
                format!(
                    "{}: path variable {variable} is not a field of {}",
                    method.full_name(),
                    input.full_name()
                )
            })?;
        }
        let body = match text("body").as_deref() {
            None => BodyRule::None,
            Some("*") => BodyRule::Whole,
            Some(field) => {
                input.get_field_by_name(field).ok_or_else(|| {
                    format!("{}: body {field} is not a field", method.full_name())
                })?;
                BodyRule::Field(field.to_owned())
            }
        };
        self.http.push(HttpRoute {
            verb,
            template,
            body,
            response_body: text("response_body"),
            method: method.clone(),
        });
        if top
            && let Some(Value::List(more)) =
                rule.get_field_by_name("additional_bindings").as_deref()
        {
            for binding in more {
                if let Value::Message(binding) = binding {
                    self.add_rule(method, binding, false)?;
                }
            }
        }
        Ok(())
    }

    /// The REST route `verb path` matches, with its bound variables; or,
    /// when only the verb is wrong, the verbs the path allows.
    pub fn route(
        &self,
        verb: &http::Method,
        path: &str,
    ) -> Result<(&HttpRoute, Bound), Vec<http::Method>> {
        let mut allowed = Vec::new();
        for route in &self.http {
            if let Some(bound) = route.template.matches(path) {
                if route.verb == *verb {
                    return Ok((route, bound));
                }
                allowed.push(route.verb.clone());
            }
        }
        Err(allowed)
    }
}

/// The field descriptors along `path` (`a.b.c`, proto names) from
/// `message`; `None` when a step is not a singular field of a message.
pub fn field_path(
    message: &prost_reflect::MessageDescriptor,
    path: &str,
) -> Option<Vec<prost_reflect::FieldDescriptor>> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut steps = path.split('.').peekable();
    while let Some(step) = steps.next() {
        let field = current
            .get_field_by_name(step)
            .or_else(|| current.get_field_by_json_name(step))?;
        if steps.peek().is_some() {
            match field.kind() {
                prost_reflect::Kind::Message(inner) if !field.is_list() && !field.is_map() => {
                    current = inner;
                }
                _ => return None,
            }
        }
        fields.push(field);
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).unwrap().matches(path)
    }

    #[test]
    fn templates_bind_the_segments_their_variables_match() {
        assert_eq!(
            bound("/v1/{name=products/*}", "/v1/products/MUG"),
            Some(vec![("name".into(), "products/MUG".into())])
        );
        assert_eq!(
            bound(
                "/v1/{name=products/*/stockLevels/*}",
                "/v1/products/MUG/stockLevels/main"
            ),
            Some(vec![(
                "name".into(),
                "products/MUG/stockLevels/main".into()
            )])
        );
        assert_eq!(
            bound("/v1/{sku}/x", "/v1/A%20B/x"),
            Some(vec![("sku".into(), "A B".into())])
        );
        assert_eq!(bound("/v1/{name=products/*}", "/v1/products"), None);
        assert_eq!(bound("/v1/{name=products/*}", "/v1/products/MUG/x"), None);
        assert_eq!(bound("/v1/{name=products/*}", "/v1/products/MUG/"), None);
        assert_eq!(bound("/v1/products", "/v1/products"), Some(vec![]));
    }

    #[test]
    fn custom_verbs_match_only_their_own_paths() {
        let commit = "/v1/{name=reservations/*}:commit";
        assert_eq!(
            bound(commit, "/v1/reservations/r1:commit"),
            Some(vec![("name".into(), "reservations/r1".into())])
        );
        assert_eq!(bound(commit, "/v1/reservations/r1:release"), None);
        assert_eq!(bound(commit, "/v1/reservations/r1"), None);
        // A route without a verb does not take a path with one.
        assert_eq!(
            bound("/v1/{name=reservations/*}", "/v1/reservations/r1:commit"),
            None
        );
        assert_eq!(
            bound("/v1/accounts:login", "/v1/accounts:login"),
            Some(vec![])
        );
    }

    #[test]
    fn double_stars_take_the_rest_and_bad_templates_are_refused() {
        assert_eq!(
            bound("/v1/{name=files/**}", "/v1/files/a/b/c"),
            Some(vec![("name".into(), "files/a/b/c".into())])
        );
        for bad in [
            "v1/x",
            "/v1/{name",
            "/v1//x",
            "/v1/x/",
            "/v1/**/x",
            "/v1/a{b}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_segments_win_over_variables() {
        let me = Template::parse("/v1/accounts/me").unwrap();
        let any = Template::parse("/v1/{name=accounts/*}").unwrap();
        assert!(me.specificity() > any.specificity());
    }
}
