"""Webhooks: the owner's signing secret and the messages sent about a job."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from longplay.api.deps import KeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.schemas import WebhookDeliveryPublic, WebhookSecretPublic
from longplay.jobs import service
from longplay.jobs.webhooks import signing
from longplay.settings import get_settings
from longplay.store.models import Owner

router = APIRouter(tags=["webhooks"])


def _secret_of(owner: Owner) -> WebhookSecretPublic:
    overlap = get_settings().webhooks.secret_overlap
    return WebhookSecretPublic(
        secret=owner.webhook_secret,
        previous_signs_until=signing.previous_signs_until(owner, overlap),
    )


@router.get("/v1/webhooks/secret", response_model=WebhookSecretPublic, responses=errors(401))
async def get_secret(key: KeyDep) -> WebhookSecretPublic:
    """The secret your webhooks are signed with."""
    return await as_owner(key, lambda _, owner: _secret_of(owner))


@router.post(
    "/v1/webhooks/secret/rotate", response_model=WebhookSecretPublic, responses=errors(401)
)
async def rotate_secret(key: KeyDep) -> WebhookSecretPublic:
    """Replace your signing secret. Every message sent from now on, retries included, is
    signed with the new one, and for a day (`LONGPLAY_WEBHOOK_SECRET_OVERLAP`) with the
    one it replaces as well, so your receivers can change over."""

    def rotate(session: Session, owner: Owner) -> WebhookSecretPublic:
        signing.rotate_secret(session, owner)
        return _secret_of(owner)

    return await as_owner(key, rotate)


@router.get(
    "/v1/jobs/{job_id}/webhooks",
    response_model=list[WebhookDeliveryPublic],
    responses=errors(401, 404),
)
async def job_webhooks(job_id: str, key: KeyDep) -> list[WebhookDeliveryPublic]:
    """The webhook messages about a job and how sending each went."""
    return await as_owner(
        key,
        lambda session, owner: [
            WebhookDeliveryPublic.model_validate(d)
            for d in service.deliveries_of(session, owner=owner, job_id=job_id)
        ],
    )
