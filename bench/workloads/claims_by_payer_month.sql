SELECT payer, date_trunc('month', service_date) AS month, count(*) AS claims,
       sum(CASE WHEN status = 'denied' THEN 1 ELSE 0 END) AS denied,
       avg(CASE WHEN status = 'denied' THEN 1.0 ELSE 0.0 END) AS denial_rate,
       sum(billed_amount) AS billed
FROM claims.claims
GROUP BY payer, date_trunc('month', service_date)
ORDER BY payer, month;
