"""Publisher sign-up (publishers/signup.py): the public form and the page its e-mailed link
opens. Used without a publisher of one's own, so these are not `member_view`s (which shows a
signed-up publisher its status until staff approve it)."""

from django.conf import settings
from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from publishers import signup
from publishers.audit import Actor
from publishers.forms import SignupCompleteForm, SignupForm


def _open_or_404() -> None:
    if not settings.PUBLISHER_SIGNUP_OPEN:
        raise Http404("Publisher sign-up is closed.")


def _throttled(request: HttpRequest, wait: int) -> HttpResponse:
    response = render(
        request, "registration/signup_throttled.html", {"minutes": -(-wait // 60)}, status=429
    )
    response["Retry-After"] = str(wait)
    return response


@require_http_methods(["GET", "HEAD", "POST"])
def signup_form(request: HttpRequest) -> HttpResponse:
    """Ask for an address and a name; the answer is the same whether the address has an
    account or not (publishers/signup.py, `signup_request`)."""
    _open_or_404()
    form = SignupForm()
    if request.method == "POST":
        wait = signup.signup_throttle_wait(request)
        if wait:
            return _throttled(request, wait)
        form = SignupForm(request.POST)
        if form.is_valid():
            wait = signup.signup_throttle_wait(request, email=form.cleaned_data["email"])
            if wait:
                return _throttled(request, wait)
            signup.signup_request(email=form.cleaned_data["email"], name=form.cleaned_data["name"])
            return redirect("signup_sent")
        return render(request, "registration/signup.html", {"form": form}, status=400)
    return render(request, "registration/signup.html", {"form": form})


def signup_sent(request: HttpRequest) -> HttpResponse:
    _open_or_404()
    return render(
        request, "registration/signup_sent.html", {"hours": settings.PUBLISHER_SIGNUP_LINK_HOURS}
    )


@require_http_methods(["GET", "HEAD", "POST"])
def signup_verify(request: HttpRequest, token: str) -> HttpResponse:
    """The verification link: choose a password and tell us about the traffic; the account
    and the pending publisher are made, and the applicant is signed in to see its status."""
    _open_or_404()
    try:
        claim = signup.signup_claim_read(token)
        if signup.signup_address_taken(claim.email):
            # Said at once, not after a password is chosen (only the address's owner has the
            # link, so this tells nobody else anything).
            raise signup.SignupError("taken", "This address already has an account.")
    except signup.SignupError as exc:
        return _link_refused(request, exc)
    form = SignupCompleteForm(email=claim.email)
    if request.method == "POST":
        form = SignupCompleteForm(request.POST, email=claim.email)
        if not form.is_valid():
            return _verify_page(request, claim, form, status=400)
        try:
            membership = signup.signup_complete(
                claim=claim,
                password=form.cleaned_data["password1"],
                website=form.cleaned_data["website"],
                about=form.cleaned_data["about"],
                actor=Actor.invitee(request, email=claim.email),
            )
        except signup.SignupError as exc:
            return _link_refused(request, exc)
        login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard")
    return _verify_page(request, claim, form)


# What each refused link answers: 400 for one we did not make (or that was edited), 410 for
# one that expired or was used.
LINK_STATUS = {"invalid": 400, "expired": 410, "taken": 410}


def _link_refused(request: HttpRequest, exc: signup.SignupError) -> HttpResponse:
    response = render(
        request,
        "registration/signup_link.html",
        {"code": exc.code, "hours": settings.PUBLISHER_SIGNUP_LINK_HOURS},
        status=LINK_STATUS[exc.code],
    )
    return _private(response)


def _verify_page(
    request: HttpRequest, claim: signup.SignupClaim, form: SignupCompleteForm, status: int = 200
) -> HttpResponse:
    response = render(
        request,
        "registration/signup_verify.html",
        {"claim": claim, "form": form},
        status=status,
    )
    return _private(response)


def _private(response: HttpResponse) -> HttpResponse:
    # The link's token is a credential: keep it out of caches and Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
