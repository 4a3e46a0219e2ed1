document.querySelectorAll('form.filter select').forEach(function (select) {
  select.addEventListener('change', function () { select.form.submit(); });
});
