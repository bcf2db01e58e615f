"""Time-triggered workflows: the scheduler's events (sla_warning, sla_breached, ticket_idle)
run the workflows whose `event_trigger` names them, through the same engine as mail.

- `idle`: which tickets the customer left without an answer for a workflow's N days.
- `runner`: one event -> its workflows, in a unit of work, logged in
  email_workflow_executions with the event as the trigger.
- `job`: the sweep (SLA events + idle events + their workflows) in one transaction, behind
  the cluster-wide advisory lock; the worker's interval job and `mailticket sla sweep`.
- `actions`: `notify` (a template mail to an address or the assignee, through the outbox)
  and `close` (optionally telling the customer why).
- `notices`: composing and queueing those mails with the shared outgoing-mail function.
"""
