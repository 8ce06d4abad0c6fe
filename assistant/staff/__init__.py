"""Staff tools, one module each, under the management commands of the same names.

    common.py        what they share: StaffError, periods, who acts, output files,
                     deletion summaries, stopping a person's answers
    export.py        conversations with their messages, JSON Lines or CSV (the admin's too)
    retention.py     the retention policy
    usage_report.py  answers, tokens and cost per user, model, assistant, day; the daily quota
    user_data.py     one person's data: exported or erased (GDPR Art. 15 and 17)
    accounts.py      employee accounts from a CSV
    model_check.py   a tiny request per model, timed, or what its failure means

The commands in `assistant/management/commands/` are thin over these: they parse
options, call one function and print. Everything is sync (commands run outside the event
loop), except the model service check and the admin's export stream.

What they promise:

- Exports stream: one query per chunk of conversations (their messages prefetched with
  it), so memory stays flat however many conversations there are. Each exported
  conversation goes on the access log first, with a reason.
- Deleting content always leaves a `DeletionRecord` with counts and date ranges, never
  the content, written in the same transaction as the deletion it describes.
- Bad input raises `StaffError` before anything changes.
"""
