from longplay.cli import app

app()
