# proverbot in a container. CPU build of torch by default; for a CUDA build:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t proverbot .
# Run folders, the database and the heartbeat live in /data (mount a volume there). On Discord:
#   docker run -d -e DISCORD_TOKEN -v proverbot-data:/data proverbot
# on Slack: -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN (Socket Mode; HTTP mode listens on 3000: -p 3000:3000);
# without a token it is the terminal bot: docker run -it -v proverbot-data:/data proverbot
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# the log on PostgreSQL: --build-arg EXTRAS=[postgres] (compose.yaml does)
ARG EXTRAS=

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PROVERBOT_CHECKPOINT_DIR=/data/checkpoints \
    PROVERBOT_DATABASE_URL=sqlite+aiosqlite:////data/proverbot.db \
    PROVERBOT_HEALTH_FILE=/data/proverbot.health

WORKDIR /app
RUN pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY model ./model
COPY chatbot ./chatbot
COPY storage ./storage
COPY proverbot_errors.py ./
COPY data ./data
RUN pip install ".${EXTRAS}"

RUN useradd --create-home proverbot && mkdir -p /data && chown proverbot /data
USER proverbot
VOLUME /data
EXPOSE 3000
# the bot beats every 30 s; the first start may train the embedded default for a few minutes first
HEALTHCHECK --interval=60s --timeout=10s --start-period=10m --retries=3 CMD ["proverbot", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["proverbot"]
CMD ["run", "-v"]
