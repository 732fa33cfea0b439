"""The curl examples of docs/postgrest.md, run as written against the real PostgREST."""

from __future__ import annotations

import json

import pytest

from tests.postgrest import docs
from tests.postgrest.api import ROLES

TOKENS = {f"{role.upper()}_JWT": role for role in ROLES}


def test_every_curl_example_gets_the_answer_written_under_it(api, doc):
    env = {"PGRST": api.base_url, **{name: api.token(role) for name, role in TOKENS.items()}}
    examples = docs.curl_examples(doc, known=set(env))
    assert len(examples) >= 20
    wrong = []
    for example in examples:
        request = example.request(env)
        response = api.send(request.method, request.target(api.base_url), dict(request.headers),
                            None if request.data is None else request.data.encode())
        if response.status != example.expected_status:
            wrong.append(f"line {example.line}: expected {example.expected_status}, got {response}\n  {example.source}")
        elif example.has_expected_body and json.loads(response.body or b"null") != example.expected_body:
            wrong.append(f"line {example.line}: expected {example.expected_body!r}, got {response}\n  {example.source}")
        if example.capture:
            env[example.capture] = response.text.rstrip("\n")  # what $(curl -s ...) holds
    assert not wrong, f"{api.name}: {len(wrong)} of {len(examples)} examples differ from the doc:\n" + "\n".join(wrong)


def test_the_examples_show_every_endpoint_and_every_kind_of_caller(doc):
    examples = docs.curl_examples(doc, known={"PGRST", *TOKENS})
    fake = {"PGRST": "http://pgrst", "JOB_ID": "1", "NEW_ID": "2", **{name: name for name in TOKENS}}
    shown = set()
    callers = set()
    for example in examples:
        request = example.request(fake)
        shown.add((request.method, request.target("http://pgrst").split("?")[0]))
        authorization = dict(request.headers).get("Authorization")
        callers.add(authorization.removeprefix("Bearer ") if authorization else "anon")
    required = {("POST", f"/rpc/{f}") for f in ("enqueue", "enqueue_bulk", "consume", "ack", "nack", "heartbeat", "pause",
                                                 "resume", "replay", "replay_dead_letters", "cancel", "purge")}
    required |= {("GET", "/rpc/get_job"), ("GET", "/queue_stats"), ("GET", "/dead_letters"), ("GET", "/workers")}
    assert required - shown == set()
    assert callers == {"anon", *TOKENS}
    assert {e.expected_status for e in examples} >= {200, 400, 401, 403, 404, 405, 409}


def test_the_reader_understands_what_the_doc_writes():
    text = """
```sh
# a comment
ID=$(curl -s -X POST "$PGRST/rpc/enqueue" \\
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{"task": "a b", "n": "$notexpanded"}')
# -> 200
curl -sS "$PGRST/rpc/get_job?id=$ID" -H "X-Quoted: \\"q\\" \\$x"
# -> 404 {"code": "PGRST202"}
curl -i "$PGRST/rpc/ack" -d "{\\"id\\": ${ID}}"
# -> 200 false
```
"""
    first, second, third = docs.curl_examples(text, known={"PGRST", "TOKEN"})
    env = {"PGRST": "http://h:1", "TOKEN": "t.o.k", "ID": "42"}
    assert first.capture == "ID" and first.expected_status == 200 and not first.has_expected_body
    assert first.request(env) == docs.Request(
        "POST", "http://h:1/rpc/enqueue",
        (("Authorization", "Bearer t.o.k"), ("Content-Type", "application/json")),
        '{"task": "a b", "n": "$notexpanded"}')
    assert second.request(env) == docs.Request("GET", "http://h:1/rpc/get_job?id=42", (("X-Quoted", '"q" $x'),), None)
    assert second.expected_body == {"code": "PGRST202"}
    # -d without a Content-Type sends what curl sends: a form
    assert third.request(env) == docs.Request(
        "POST", "http://h:1/rpc/ack", (("Content-Type", "application/x-www-form-urlencoded"),), '{"id": 42}')
    assert third.expected_body is False
    assert third.request(env).target("http://h:1") == "/rpc/ack"


@pytest.mark.parametrize("block", [
    'curl -XPOST "$PGRST/rpc/x"\n# -> 200',                    # options glued to their value
    'curl --json "{}" "$PGRST/rpc/x"\n# -> 200',                # an option it does not know
    'curl "$PGRST/rpc/x" | jq .\n# -> 200',                     # a pipe
    'curl "$PGRST/rpc/x"; curl "$PGRST/rpc/y"\n# -> 200',       # two commands
    'curl "$PGRST/rpc/x" -d @body.json\n# -> 200',              # a body from a file
    'curl "$PGRST/rpc/x"',                                      # no expected status
    'curl "$PGRST/rpc/x"\n\n# -> 200',                          # the status not right under it
    '# -> 200',                                                 # a status without a command
    'curl "$PGRST/rpc/x" -H "Authorization: Bearer $NOBODY"\n# -> 200',  # an unset variable
    'http POST "$PGRST/rpc/x"\n# -> 200',                       # not curl
    'export PGRST=http://localhost:3000\n# -> 200',             # not curl either
    'curl "$PGRST/rpc/x" -d \'{"a": 1}\' -d \'{"b": 2}\'\n# -> 200',  # two bodies
    'curl "$PGRST/rpc/x" "$PGRST/rpc/y"\n# -> 200',             # two URLs
    'curl "$PGRST/rpc/x" -H "no colon"\n# -> 200',              # a header that is not Name: value
    "curl '$PGRST/rpc/x\n# -> 200",                             # an unclosed quote
    'curl "$PGRST/rpc/x" -d $(cat body)\n# -> 200',             # a command substitution inside
    'curl "$PGRST/rpc/x" \\',                                   # a continuation at the end
    'curl "$PGRST/rpc/x"\n# -> 200 {not json}',                 # an expected body that is not JSON
])
def test_the_reader_refuses_what_it_does_not_understand(block):
    with pytest.raises(docs.DocError):
        for example in docs.curl_examples(f"```sh\n{block}\n```\n", known={"PGRST"}):
            example.request({"PGRST": "http://h:1"})


def test_a_url_outside_pgrst_is_refused():
    (example,) = docs.curl_examples('```sh\ncurl "http://elsewhere/rpc/x"\n# -> 200\n```\n', known=set())
    with pytest.raises(docs.DocError):
        example.request({}).target("http://h:1")
