//! A small PromQL scanner for checking dashboards and alert rules against a scrape: it finds the
//! series an expression selects (with the labels its matchers name) and the labels its grouping
//! clauses name, telling metric names apart from functions, keywords, strings, durations and
//! numbers. It evaluates nothing; a check that needs the result's labels builds on [`Refs`].

/// What one PromQL expression refers to.
#[derive(Debug, Default)]
pub struct Refs {
    /// Series selected, each with the label names of its matchers.
    pub selectors: Vec<(String, Vec<String>)>,
    /// Label names in `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` lists.
    pub grouping: Vec<String>,
    /// Label names in matchers of a selector without a metric name (`{__name__=...}`).
    pub bare_matchers: Vec<String>,
}

pub const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
pub const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
pub const KEYWORDS: [&str; 9] = [
    "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start",
];

/// A small PromQL scanner: enough to tell metric names from functions, keywords, label lists,
/// strings, durations and numbers. It does not evaluate anything.
pub fn promql_refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut i = 0;
    let mut last_metric: Option<usize> = None;
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
            last_metric = None;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '{' {
            let (labels, end) = matcher_labels(&chars, i);
            match last_metric {
                Some(m) => refs.selectors[m].1.extend(labels),
                None => refs.bare_matchers.extend(labels),
            }
            last_metric = None;
            i = end;
            continue;
        }
        if c == '$' {
            // A Grafana variable ($job, $__rate_interval, ${datasource}).
            i += 1;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '{' | '}'))
            {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            last_metric = None;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            let next = chars.get(after).copied();
            if GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    let end = chars[after..]
                        .iter()
                        .position(|c| *c == ')')
                        .map(|p| after + p)
                        .expect("closing parenthesis of a label list");
                    let list: String = chars[after + 1..end].iter().collect();
                    refs.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = end + 1;
                }
                last_metric = None;
                continue;
            }
            let is_function = next == Some('(');
            let is_aggregation = AGGREGATIONS.contains(&word.as_str())
                && (is_function || {
                    let w: String = chars[after..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    w == "by" || w == "without"
                });
            if is_function || is_aggregation || KEYWORDS.contains(&word.to_lowercase().as_str()) {
                last_metric = None;
                continue;
            }
            refs.selectors.push((word, Vec::new()));
            last_metric = Some(refs.selectors.len() - 1);
            continue;
        }
        last_metric = None;
        i += 1;
    }
    refs
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    panic!("unterminated string in PromQL")
}

/// The label names of a `{...}` matcher list starting at `start`, and the index after it.
fn matcher_labels(chars: &[char], start: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut i = start + 1;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        match chars.get(i) {
            None => panic!("unterminated label matcher"),
            Some('}') => return (labels, i + 1),
            _ => {}
        }
        let s = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        assert!(i > s, "label name expected in matcher at {s}");
        labels.push(chars[s..i].iter().collect());
        while i < chars.len() && chars[i] != '"' && chars[i] != '\'' && chars[i] != '`' {
            i += 1;
        }
        i = skip_string(chars, i);
    }
}
