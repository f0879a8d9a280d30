// The console's card form: when it is sent, the script asks matrixhost for a SetupIntent,
// Stripe.js confirms it with the card element, then the form posts only the SetupIntent's id.
// The card number never reaches matrixhost (R13).
"use strict";
(function () {
  var form = document.getElementById("card-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var stripe = Stripe(form.dataset.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var errors = document.getElementById("card-errors");
  var button = form.querySelector("button[type=submit]");

  function notSaved(why) {
    errors.textContent = "Your card was not saved: " + why;
    button.disabled = false;
  }

  // The intent's client secret, or the reason matrixhost gave for refusing one.
  function newIntent() {
    return fetch(form.dataset.intentUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf: form.elements.csrf.value }).toString()
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.message || "the card form was refused."); }
        return body.client_secret;
      });
    });
  }

  function reason(failure) {
    // An answer that is not JSON is the console's own refusal page: the session or its token is gone.
    if (failure instanceof SyntaxError) { return "the page has expired; reload it and try again."; }
    if (failure instanceof TypeError) { return "matrixhost could not be reached; try again."; }
    return failure.message;
  }

  form.addEventListener("submit", function (event) {
    if (form.elements.setup_intent.value) { return; }
    event.preventDefault();
    errors.textContent = "";
    button.disabled = true;
    newIntent().then(function (clientSecret) {
      return stripe.confirmCardSetup(clientSecret, { payment_method: { card: card } }).then(function (result) {
        if (result.error) {
          var why = result.error.message || "The card was refused.";
          notSaved(why + " Nothing was charged. Check the details or use another card.");
          return;
        }
        form.elements.setup_intent.value = result.setupIntent.id;
        form.submit();
      });
    }, function (failure) { notSaved(reason(failure)); });
  });
})();
