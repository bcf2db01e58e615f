"""SLAs: business-hours calendars, policies by customer and priority, the pausing clock,
and the once-only sla_warning / sla_breached events.

- `config.load_sla(path)`: SLA_PATH with `file:line` errors; SlaConfig.select_policy and
  calendar_for.
- `calendar.BusinessCalendar`: business_time, add_business_time (time zones, DST,
  holidays via the `holidays` package, closed days, 24x7).
- `clock.compute`: pure SLA state of one ticket from its status history and `now`.
- `service`: status history, stored state, events, and the scheduler's sweep.
"""
