"""The ASGI entry point uvicorn imports: settings from the environment, nothing else."""

from app.main import create_app
from app.settings import Settings

app = create_app(Settings.from_env())
