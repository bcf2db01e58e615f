"""Everything a running mailticket needs, built once at start-up from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailticket.pipeline import Pipeline
from mailticket.reading.classification import Classifier
from mailticket.settings import Settings
from mailticket.store.db import make_engine, make_session_factory
from mailticket.workflows.loader import load_workflows
from mailticket.workflows.schema import WorkflowSet


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    classifier: Classifier
    workflows: WorkflowSet
    pipeline: Pipeline

    def reload_workflows(self) -> WorkflowSet:
        """Swap in a freshly validated workflow set; a bad file leaves the old one running."""
        fresh = load_workflows(self.settings.workflows_path)
        self.workflows = fresh
        self.pipeline.workflows = fresh
        return fresh

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, engine: Engine | None = None) -> Runtime:
    engine = engine or make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    classifier = Classifier.from_settings(settings)
    workflows = load_workflows(settings.workflows_path)
    pipeline = Pipeline(settings, session_factory, classifier, workflows)
    return Runtime(settings, engine, session_factory, classifier, workflows, pipeline)
