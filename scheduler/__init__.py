"""APScheduler jobs: claim due campaigns, reconcile the ledger, finalise campaigns."""
