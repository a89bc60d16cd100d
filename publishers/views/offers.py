"""Offers: every campaign the publisher may run or ask for, its access state, a request for
access and a new link to an offer it may run (tracking/access.py decides)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from publishers.audit import Actor
from publishers.forms import LinkCreateForm, OfferRequestForm
from publishers.views.common import member_view
from tracking import access


def _page(
    request: HttpRequest,
    *,
    request_form: OfferRequestForm | None = None,
    link_form: LinkCreateForm | None = None,
    failed_offer: str = "",
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "publishers/offers.html",
        {
            "nav": "offers",
            "offers": access.offers_list(request.publisher),
            # One form per row: no ids, the labels wrap their inputs.
            "request_form": request_form or OfferRequestForm(auto_id=False),
            "link_form": link_form or LinkCreateForm(auto_id=False),
            "failed_offer": failed_offer,
        },
        status=status,
    )


@member_view
def offers(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@member_view
def offer_request(request: HttpRequest, public_id: str) -> HttpResponse:
    form = OfferRequestForm(request.POST, auto_id=False)
    if not form.is_valid():
        return _page(request, request_form=form, failed_offer=public_id, status=400)
    try:
        offer = access.offer_access_request(
            publisher=request.publisher,
            public_id=public_id,
            message=form.cleaned_data["message"],
            actor=Actor.dashboard(request),
        )
    except access.OfferNotFound:
        raise Http404("No such offer.") from None
    except access.AccessRefused as exc:
        messages.info(request, exc.message)
        return redirect("offers")
    messages.success(request, f"Access to {offer.campaign.name} requested: staff will review it.")
    return redirect("offers")


@require_POST
@member_view
def offer_link_create(request: HttpRequest, public_id: str) -> HttpResponse:
    form = LinkCreateForm(request.POST, auto_id=False)
    if not form.is_valid():
        return _page(request, link_form=form, failed_offer=public_id, status=400)
    try:
        link = access.tracking_link_create(
            publisher=request.publisher,
            public_id=public_id,
            name=form.cleaned_data["name"],
            default_placement=form.cleaned_data["default_placement"],
            actor=Actor.dashboard(request),
        )
    except access.OfferNotFound:
        raise Http404("No such offer.") from None
    except access.AccessRefused as exc:
        raise PermissionDenied(exc.message) from None
    except ValidationError as exc:
        form.add_error(None, exc)
        return _page(request, link_form=form, failed_offer=public_id, status=400)
    messages.success(request, f"Link {link.code} created for {link.campaign.name}.")
    return redirect("links")
