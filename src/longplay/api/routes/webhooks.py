"""Webhooks: the owner's signing secret and the messages sent about a job."""

from __future__ import annotations

from fastapi import APIRouter

from longplay.api.deps import KeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.schemas import WebhookDeliveryPublic, WebhookSecretPublic
from longplay.jobs import service
from longplay.jobs.webhooks import signing

router = APIRouter(tags=["webhooks"])


@router.get("/v1/webhooks/secret", response_model=WebhookSecretPublic, responses=errors(401))
async def get_secret(key: KeyDep) -> WebhookSecretPublic:
    """The secret your webhooks are signed with."""
    return await as_owner(key, lambda _, owner: WebhookSecretPublic(secret=owner.webhook_secret))


@router.post(
    "/v1/webhooks/secret/rotate", response_model=WebhookSecretPublic, responses=errors(401)
)
async def rotate_secret(key: KeyDep) -> WebhookSecretPublic:
    """Replace your signing secret; every message sent from now on, retries included,
    is signed with the new one."""
    return await as_owner(
        key,
        lambda session, owner: WebhookSecretPublic(secret=signing.rotate_secret(session, owner)),
    )


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
