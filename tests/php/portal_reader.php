<?php
// A stand-in for the portal that reads every request with PHP's own request handling and says
// what it read: the router script of `php -S`, used by tests/php_portal_differential.rs.
//
// It reads parameters the way the portal's getRequestData does (query merged with PHP's POST
// form fields; for a POST with no form fields, the trimmed raw body as JSON when Content-Type
// is exactly application/json, else through parse_str), splits batch commands with parse_url and
// parse_str as the portal's batch does, and normalises crm.automatedsolution changes the way the
// portal's controller does. Every request it serves is appended as one JSON line to the file
// named by the PORTAL_READER_LOG environment variable; the same reading comes back in the answer.
// It keeps no state: workplace N always holds smart process N, so the proxy's snapshots are
// plausible and every change "applies".

function effective_params(): array
{
    $params = array_replace($_GET, $_POST);
    if ($_SERVER['REQUEST_METHOD'] === 'POST' && count($_POST) === 0) {
        $raw = trim(file_get_contents('php://input'));
        if ($raw !== '') {
            $ct = explode(';', $_SERVER['CONTENT_TYPE'] ?? '')[0];
            if ($ct === 'application/json') {
                $body = json_decode($raw, true);
                $body = is_array($body) ? $body : [];
            } else {
                $body = [];
                parse_str($raw, $body);
            }
            $params = array_replace($params, $body);
        }
    }
    return $params;
}

function route(string $uri): array
{
    $path = rawurldecode(parse_url($uri, PHP_URL_PATH) ?? '');
    $segments = explode('/', trim($path, '/'));
    $method = strtolower(end($segments));
    $transport = 'json';
    if (preg_match('/^(.+)\.(json|xml)$/', $method, $m)) {
        $method = $m[1];
        $transport = $m[2];
    }
    return [$method, $transport];
}

function type_ids($value): array
{
    $ids = [];
    foreach ((array)$value as $v) {
        $n = (int)$v;
        if ($n > 0) {
            $ids[] = $n;
        }
    }
    $ids = array_values(array_unique($ids));
    sort($ids);
    return $ids;
}

// What a crm.automatedsolution.* change would do, normalised as the portal's controller does.
function effect(string $method, array $p): array
{
    $id = $p['id'] ?? null;
    $e = ['method' => $method];
    if ($method !== 'crm.automatedsolution.add') {
        // add takes no id: the controller never reads one.
        $e['id'] = is_numeric($id) ? (int)$id : $id;
    }
    if ($method === 'crm.automatedsolution.delete') {
        return $e;
    }
    $fields = $p['fields'] ?? [];
    if (!is_array($fields)) {
        $e['fields'] = 'not an array';
        return $e;
    }
    $e['title'] = array_key_exists('title', $fields) ? (string)$fields['title'] : null;
    $e['typeIds'] = array_key_exists('typeIds', $fields) ? type_ids($fields['typeIds']) : null;
    $e['other_fields'] = array_values(array_diff(array_map('strval', array_keys($fields)), ['title', 'typeIds']));
    return $e;
}

function is_change(string $method): bool
{
    return in_array($method, ['crm.automatedsolution.update', 'crm.automatedsolution.add', 'crm.automatedsolution.delete'], true);
}

function workplace(int $id, ?array $e = null): array
{
    return [
        'id' => $id,
        'title' => $e['title'] ?? ('W' . $id),
        'typeIds' => $e['typeIds'] ?? [$id],
    ];
}

// The answer of one method, and what it changed (null when it changed nothing).
function run(string $method, array $p): array
{
    if ($method === 'crm.automatedsolution.get') {
        $id = (int)($p['id'] ?? 0);
        return [['automatedSolution' => workplace($id)], null];
    }
    if ($method === 'crm.automatedsolution.list') {
        $list = [];
        for ($i = 1; $i <= 20; $i++) {
            $list[] = workplace($i);
        }
        return [['automatedSolutions' => $list], null];
    }
    if ($method === 'user.current') {
        return [['ID' => '1'], null];
    }
    if (is_change($method)) {
        $e = effect($method, $p);
        if ($method === 'crm.automatedsolution.delete') {
            return [null, $e];
        }
        $id = $method === 'crm.automatedsolution.add' ? 900 : (int)$e['id'];
        return [['automatedSolution' => workplace($id, $e)], $e];
    }
    return [['read' => $p], null];
}

function time_object(): array
{
    $t = microtime(true);
    return ['start' => $t, 'finish' => $t, 'duration' => 0, 'processing' => 0,
        'date_start' => date('c'), 'date_finish' => date('c')];
}

[$method, $transport] = route($_SERVER['REQUEST_URI']);
$params = effective_params();
$reading = [
    'http_method' => $_SERVER['REQUEST_METHOD'],
    'method' => $method,
    'transport' => $transport,
    'params' => $params,
    'authorization' => isset($_SERVER['HTTP_AUTHORIZATION']),
    'changes' => [],
];
$answer = ['time' => time_object()];

if ($method === 'batch') {
    $q = array_change_key_case($params, CASE_UPPER);
    $reading['halt'] = isset($q['HALT']) ? (bool)$q['HALT'] : false;
    $commands = [];
    $results = [];
    $cnt = 0;
    foreach ((isset($q['CMD']) && is_array($q['CMD'])) ? $q['CMD'] : [] as $key => $call) {
        if ($cnt++ >= 50 || !is_string($call)) {
            continue;
        }
        $url = parse_url($call);
        $cmdMethod = is_array($url) ? ($url['path'] ?? null) : null;
        $query = is_array($url) ? ($url['query'] ?? null) : null;
        $cmdParams = [];
        if ($query) {
            parse_str($query, $cmdParams);
        }
        $lc = is_string($cmdMethod) ? strtolower($cmdMethod) : null;
        $commands[] = ['key' => (string)$key, 'url' => $url, 'method' => $cmdMethod, 'params' => $cmdParams];
        if ($lc !== null) {
            [$result, $change] = run($lc, $cmdParams);
            $results[$key] = $result;
            if ($change !== null) {
                $reading['changes'][] = $change + ['key' => (string)$key];
            }
        }
    }
    $reading['commands'] = $commands;
    $answer['result'] = ['result' => $results, 'result_error' => [], 'result_total' => [],
        'result_next' => [], 'result_time' => []];
} else {
    [$result, $change] = run($method, $params);
    if ($change !== null) {
        $reading['changes'][] = $change;
    }
    $answer['result'] = $result;
}

$flags = JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION;
$log = getenv('PORTAL_READER_LOG');
if ($log) {
    file_put_contents($log, json_encode($reading, $flags) . "\n", FILE_APPEND | LOCK_EX);
}
$answer['reading'] = $reading;
header('Content-Type: application/json');
echo json_encode($answer, $flags);
